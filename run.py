"""Train and evaluate one configuration, or sweep many with -m:

    python run.py variant=dora rank=16 task=mrpc data.glue_dir=../shared/glue
    python run.py -m variant=lora,rslora,dora,vera,qlora rank=4,8,16 task=mrpc,rte
    python run.py variant=lora variant.init=pissa          # a variant's options are keys of its group

Every override, and every run of a sweep, is checked before Hydra starts anything (one line naming the
key, the value and what is valid; exit status 2).
"""
import sys

import hydra

from experiments.config import ConfigError, check, open_mapping_overrides, register


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg):
    from experiments.run.app import run_from_hydra  # the heavy imports come once the config is known good

    return run_from_hydra(cfg)


def main(argv=None) -> None:
    argv = open_mapping_overrides(sys.argv[1:] if argv is None else list(argv))
    try:
        check(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    register()
    sys.argv = [sys.argv[0], *argv]
    hydra_main()


if __name__ == "__main__":
    main()
