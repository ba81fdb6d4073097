"""Train and evaluate one configuration, or sweep many with -m:

    python run.py variant=dora rank=16 task=mrpc data.glue_dir=../shared/glue
    python run.py -m variant=lora,rslora,dora,vera,qlora rank=4,8,16 task=mrpc,rte
"""
import sys

import hydra

from experiments.overrides import OverrideError, check


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    from experiments.cli import run_from_hydra  # torch is imported only once the config is known good

    return run_from_hydra(cfg)


if __name__ == "__main__":
    try:
        check(sys.argv[1:])
    except OverrideError as error:
        sys.exit(f"error: {error}")
    main()
