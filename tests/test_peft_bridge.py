"""The PEFT bridge (``variant=peft variant.method=<any PEFT tuner>``): every method the installed peft
lists either trains through it or is on its list of methods that cannot run here, with a reason; its
LoRA is the native LoRA; bad input fails before any model loads; a sweep gives one row per method."""
import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SHORT, composed, make_bert, records

import variants
from experiments.config import ConfigError, build
from variants import peft_tuner

peft = pytest.importorskip("peft")

#: hidden 384, as MiniLM: PEFT's size rules (block sizes, group sizes) see the widths a run sees
WIDTH = 384
TARGETS = ["query", "value"]
RUNNABLE = [m for m in peft_tuner.methods() if m not in peft_tuner.CANNOT_RUN]


def bridge(method, seed=0, rank=4, **config):
    return variants.apply(make_bert(seed, hidden_size=WIDTH), "peft", rank=rank, alpha=8, target_modules=TARGETS,
                          method=method, config=config)


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_the_methods_are_peft_s_and_the_cannot_list_names_only_them():
    listed = sorted(t.value.lower() for t in peft.PEFT_TYPE_TO_CONFIG_MAPPING)
    assert peft_tuner.methods() == listed and len(listed) > 30
    assert set(peft_tuner.CANNOT_RUN) <= set(listed) and set(peft_tuner.DEFAULTS_HERE) <= set(listed)
    assert set(peft_tuner.CANNOT_MERGE) | set(peft_tuner.CANNOT_UNMERGE) <= set(listed) - set(peft_tuner.CANNOT_RUN)
    assert all(reason.strip() for reason in peft_tuner.CANNOT_RUN.values())


def test_the_cannot_list_is_in_the_readme():
    for text in ((REPO / "docs" / "peft-methods.md").read_text(), (REPO / "README.md").read_text()):
        assert all(f"`{method}`" in text for method in peft_tuner.CANNOT_RUN)
    assert "docs/peft-methods.md" in (REPO / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("method", peft_tuner.methods())
def test_every_peft_method_trains_two_steps_or_says_why_not(method, token_ids, tmp_path):
    if method in peft_tuner.CANNOT_RUN:
        with pytest.raises(ValueError, match="cannot run here: " + re.escape(peft_tuner.CANNOT_RUN[method][:20])):
            bridge(method)
        return
    model = bridge(method)
    variants.before_training(model, total_steps=2, train_loader=None)
    adapter = {n: p.detach().clone() for n, p in model.named_parameters()
               if p.requires_grad and not n.startswith("classifier.")}
    assert adapter and all(p.requires_grad for p in model.classifier.parameters())
    assert not any(p.requires_grad for n, p in model.named_parameters() if "word_embeddings" in n)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([0, 1])
    model.train()
    for step in range(2):
        loss = model(input_ids=token_ids, labels=labels).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        variants.after_optimizer_step(model, step)
        optimizer.zero_grad()
    moved = [n for n, p in model.named_parameters() if n in adapter and not torch.equal(adapter[n], p)]
    assert moved, f"no adapter tensor of {method} changed in two steps"
    variants.save(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"].lower() == method and config["modules_to_save"] == ["classifier"]
    assert (tmp_path / "adapter_model.safetensors").stat().st_size > 0



def trained_two_steps(method, token_ids):
    model = bridge(method)
    variants.before_training(model, total_steps=2, train_loader=None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(2):
        model(input_ids=token_ids, labels=torch.tensor([0, 1])).loss.backward()
        optimizer.step()
        variants.after_optimizer_step(model, step)
        optimizer.zero_grad()
    return model


def weights(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("method", RUNNABLE)
def test_merge_keeps_the_logits_unmerge_and_remove_give_the_base_back(method, token_ids):
    model = trained_two_steps(method, token_ids)
    base = make_bert(0, hidden_size=WIDTH)
    base.classifier.load_state_dict(model.classifier.state_dict())  # the head trains with every variant
    unmerged, before = logits(model, token_ids), weights(model)
    assert not torch.allclose(unmerged, logits(base, token_ids), atol=1e-3)  # the adapters moved the logits
    if method in peft_tuner.CANNOT_MERGE:
        with pytest.raises(ValueError, match=re.escape(peft_tuner.CANNOT_MERGE[method])):
            variants.merge(model)
        pytest.skip(f"{method}: {peft_tuner.CANNOT_MERGE[method]}")
    variants.merge(model)
    assert any(not torch.equal(tensor, before[name]) for name, tensor in weights(model).items())  # the update went in
    torch.testing.assert_close(logits(model, token_ids), unmerged, rtol=1e-5, atol=5e-5)
    if method in peft_tuner.CANNOT_UNMERGE:
        for undo in (variants.unmerge, variants.remove):
            with pytest.raises(ValueError, match=re.escape(peft_tuner.CANNOT_UNMERGE[method])):
                undo(model)
        pytest.skip(f"{method}: {peft_tuner.CANNOT_UNMERGE[method]}")
    variants.unmerge(model)
    torch.testing.assert_close(logits(model, token_ids), unmerged, rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(weights(model), before, rtol=0, atol=1e-5)
    variants.merge(model)
    variants.remove(model)  # merged: the update comes out of the base weights again
    assert model.variant_config is None and not hasattr(model, "peft_tuner")
    torch.testing.assert_close(model.state_dict(), base.state_dict(), rtol=0, atol=1e-5)
    torch.testing.assert_close(logits(model, token_ids), logits(base, token_ids), rtol=1e-5, atol=5e-5)

@pytest.mark.slow
def test_the_bridge_s_lora_gives_the_native_lora_s_logits(token_ids):
    native = variants.apply(make_bert(3, hidden_size=WIDTH), "lora", rank=4, alpha=8, target_modules=TARGETS)
    ours = bridge("lora", seed=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, layer in variants.adapter_layers(native).items():
            layer.lora_B.normal_(generator=generator)
            peft_layer = ours.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
        ours.classifier.load_state_dict(native.classifier.state_dict())
    assert len(variants.adapter_layers(native)) == 4
    assert not torch.allclose(logits(native, token_ids), logits(make_bert(3, hidden_size=WIDTH), token_ids))
    torch.testing.assert_close(logits(ours, token_ids), logits(native, token_ids), rtol=1e-5, atol=1e-5)
    assert variants.trainable_parameters(ours) == variants.trainable_parameters(native)


@pytest.mark.slow
def test_a_saved_bridge_adapter_is_peft_s_format(token_ids, tmp_path):
    model = bridge("loha", seed=1, init_weights=False)  # non-zero from the start: the logits move
    variants.save(model, tmp_path)
    loaded = peft.PeftModel.from_pretrained(make_bert(1, hidden_size=WIDTH), tmp_path)
    assert not torch.allclose(logits(model, token_ids), logits(make_bert(1, hidden_size=WIDTH), token_ids))
    torch.testing.assert_close(logits(loaded, token_ids), logits(model, token_ids))


@pytest.mark.slow
def test_adalora_s_schedule_gets_the_run_s_steps():
    model = bridge("adalora", rank=4, tinit=1, tfinal=1)
    config = model.peft_tuner.peft_config["default"]
    variants.before_training(model, total_steps=7, train_loader=None)
    assert config.total_step == 7
    with pytest.raises(ValueError, match="total_step=2"):
        variants.before_training(model, total_steps=2, train_loader=None)  # tinit + tfinal leave no steps


# -- configuration: labels, the hash, bad input ---------------------------------------------------------

def config_of(*overrides):
    return build(composed("variant=peft", *overrides))


@pytest.mark.slow  # builds several configs (over a second)
def test_rows_are_labelled_by_method_and_the_hash_covers_the_method_and_its_config():
    loha, lokr = config_of("variant.method=loha"), config_of("variant.method=lokr")
    assert (loha.variant_class.label(loha.options), lokr.variant_class.label(lokr.options)) == ("peft:loha", "peft:lokr")
    assert loha.config_hash != lokr.config_hash
    assert config_of("variant.method=loha", "variant.config.init_weights=false").config_hash != loha.config_hash
    hashed = loha.hash_input()["variant"]["options"]
    assert hashed["method"] == "loha" and hashed["config"]["rank_dropout"] == 0.0
    assert "r" not in hashed["config"]  # rank fills it, and rank is hashed at the top level


@pytest.mark.slow  # builds several configs (over a second)
def test_a_setting_the_method_has_no_field_for_is_blanked_and_leaves_the_hash_alone():
    ia3 = config_of("variant.method=ia3", "rank=4")
    assert ia3.rank is None and ia3.alpha is None and ia3.target_modules is not None
    assert ia3.config_hash == config_of("variant.method=ia3", "rank=16", "alpha=3").config_hash
    own_r = config_of("variant.method=loha", "variant.config.r=2")
    assert own_r.rank is None and own_r.config_hash == config_of("variant.method=loha", "variant.config.r=2",
                                                                 "rank=32").config_hash


@pytest.mark.parametrize("overrides, expected", [
    (["variant.method=loah"], "method='loah' is not a PEFT method (did you mean"),
    (["variant.method=loha", "variant.config.rnak=4"],
     "config.rnak: PEFT's loha config has no field 'rnak'; its fields: rank_pattern, alpha_pattern, r, alpha"),
    (["variant.method=prompt_tuning"], "method='prompt_tuning' cannot run here: prompt learning"),
    (["variant.method=oft", "variant.config.oft_block_size=5"], "PEFT's oft config refuses these settings: You can"),
])
def test_bad_input_fails_in_one_line_before_any_model_loads(overrides, expected):
    with pytest.raises(ConfigError) as error:
        config_of(*overrides)
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_run_py_refuses_a_bad_method_with_exit_2_and_no_record(tmp_path):
    done = subprocess.run([sys.executable, "run.py", "variant=peft", "variant.method=lokrr", f"results.dir={tmp_path}",
                           f"hydra.run.dir={tmp_path}/hydra"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "did you mean 'lokr'" in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_three_method_sweep_records_three_rows_that_analysis_shows_apart(tmp_path):
    command = [sys.executable, "run.py", "-m", *SHORT, f"results.dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep",
               "variant=peft", "variant.method=loha,lokr,ia3", "task=demo"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = records(tmp_path)
    assert sorted(r["variant"] for r in rows) == ["peft:ia3", "peft:loha", "peft:lokr"]
    assert all(r["status"] == "ok" for r in rows) and len({r["trainable_params"] for r in rows}) == 3
    shown = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path), "--no-figures"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    main_table = shown.stdout.split("## Main metric")[1].split("##")[0]
    table_rows = [line.split("|") for line in main_table.splitlines() if line.startswith("| peft:")]
    assert sorted(row[1].strip() for row in table_rows) == ["peft:ia3", "peft:loha", "peft:lokr"]
    assert len({row[2].strip() for row in table_rows}) == 3  # each row its own trainable parameters


# -- LoRA's inits and optimizer from PEFT ----------------------------------------------------------------

@pytest.mark.slow  # builds several configs (over a second)
@pytest.mark.parametrize("init", ["olora", "pissa_niter_4"])
def test_peft_s_lora_inits_start_where_the_base_model_is_and_are_their_own_rows(init, token_ids):
    model = bridge("lora", seed=2, init_lora_weights=init)
    base = make_bert(2, hidden_size=WIDTH)
    query = model.bert.encoder.layer[0].attention.self.query
    assert not torch.equal(query.base_layer.weight, base.bert.encoder.layer[0].attention.self.query.weight)  # residual
    assert query.lora_B["default"].weight.abs().sum() > 0  # not LoRA's zero start
    torch.testing.assert_close(logits(model, token_ids), logits(base, token_ids), rtol=1e-4, atol=1e-4)
    config = config_of("variant.method=lora", f"variant.config.init_lora_weights={init}")
    assert config.variant_class.label(config.options) == f"peft:lora(init_lora_weights={init})"
    assert config.config_hash != config_of("variant.method=lora").config_hash


@pytest.mark.slow
def test_eva_s_data_pass_reads_the_training_loader_only(token_ids):
    model = bridge("lora", seed=2, init_lora_weights="eva")
    seen = []

    class TrainLoader:
        def __iter__(self):
            for _ in range(6):
                seen.append(1)
                yield {"input_ids": token_ids, "attention_mask": torch.ones_like(token_ids), "labels": torch.tensor([0, 1])}

        def __len__(self):
            return 6

    start = model.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight.detach().clone()
    variants.before_training(model, total_steps=3, train_loader=TrainLoader())
    after = model.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight
    assert seen and (after.shape != start.shape or not torch.equal(after, start))
    with pytest.raises(ValueError, match="needs the run's training loader"):
        variants.before_training(bridge("lora", init_lora_weights="eva"), total_steps=3, train_loader=None)


class TrainLoader:
    """A stand-in for the run's training loader that records the batches it gives."""

    def __init__(self, token_ids, batches=20):
        self.token_ids, self.batches, self.given = token_ids, batches, []

    def __iter__(self):
        for _ in range(self.batches):
            batch = {"input_ids": self.token_ids, "attention_mask": torch.ones_like(self.token_ids),
                     "labels": torch.arange(len(self.token_ids)) % 2}
            self.given.append(batch)
            yield batch

    def __len__(self):
        return self.batches


def lora_a(model):
    return torch.cat([m.lora_A["default"].weight.detach().flatten() for m in model.modules() if hasattr(m, "lora_A")])


@pytest.mark.slow
@pytest.mark.parametrize("init", sorted(peft_tuner.BEFORE_LAYER_INITS))
def test_an_init_s_data_pass_reads_init_batches_of_the_training_loader_then_its_layers_train(init, token_ids):
    from experiments.run.train import parameter_groups

    def made_with(ids):
        model = variants.apply(make_bert(2, hidden_size=WIDTH), "peft", rank=4, alpha=8, target_modules=TARGETS,
                               method="lora", config={"init_lora_weights": init}, init_batches=3)
        assert not any(hasattr(m, "lora_A") for m in model.modules())  # no layers before the data pass
        loader = TrainLoader(ids)
        variants.before_training(model, total_steps=2, train_loader=loader)
        assert len(loader.given) == 3
        return model

    model = made_with(token_ids)
    other_data = made_with(torch.flip(token_ids, dims=[1]))
    default = bridge("lora", seed=2, init_lora_weights="gaussian")
    assert not torch.allclose(lora_a(model), lora_a(other_data))  # the data decides where it starts
    assert lora_a(model).shape == lora_a(default).shape and not torch.allclose(lora_a(model), lora_a(default))
    assert variants.trainable_parameters(model) == variants.trainable_parameters(default)
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-2, None, 0.0, ["classifier"]))  # the run's own
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert len(adapter) == 8 and {id(p) for n, p in model.named_parameters() if n in adapter} <= held
    assert {id(p) for p in model.classifier.parameters()} <= held
    model.train()
    for _ in range(2):
        model(input_ids=token_ids, labels=torch.tensor([0, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(not torch.equal(p, adapter[n]) for n, p in model.named_parameters() if "lora_A" in n)
    with pytest.raises(ValueError, match="needs the run's training loader"):
        variants.before_training(variants.apply(make_bert(2, hidden_size=WIDTH), "peft", rank=4, target_modules=TARGETS,
                                                method="lora", config={"init_lora_weights": init}),
                                 total_steps=2, train_loader=None)


@pytest.mark.slow  # builds several configs (over a second)
def test_a_data_driven_init_is_its_own_row_and_its_batches_are_hashed():
    corda = config_of("variant.method=lora", "variant.config.init_lora_weights=corda")
    assert corda.variant_class.label(corda.options) == "peft:lora(init_lora_weights=corda)"
    assert corda.config_hash != config_of("variant.method=lora").config_hash
    assert corda.config_hash != config_of("variant.method=lora", "variant.config.init_lora_weights=corda",
                                          "variant.init_batches=4").config_hash
    assert config_of("variant.method=lora", "variant.init_batches=4").config_hash == config_of("variant.method=lora").config_hash
    with pytest.raises(ConfigError, match="init_batches=0: must be an integer >= 1"):
        config_of("variant.method=lora", "variant.init_batches=0")


@pytest.mark.slow  # builds several configs (over a second)
def test_loraplus_trains_b_at_the_ratio_times_a_s_rate():
    model = variants.apply(make_bert(0), "peft", rank=4, alpha=8, target_modules=TARGETS, method="lora",
                           loraplus_ratio=16)
    optimizer = variants.own_optimizer(model, lr=1e-3, weight_decay=0.0)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    names = dict(model.named_parameters())
    assert {rate[id(p)] for n, p in names.items() if "lora_A" in n} == {1e-3}
    assert {rate[id(p)] for n, p in names.items() if "lora_B" in n} == {16e-3}
    assert set(rate) == {id(p) for p in names.values() if p.requires_grad}
    assert variants.own_optimizer(bridge("lora"), lr=1e-3, weight_decay=0.0) is None  # the loop's AdamW
    config = config_of("variant.method=lora", "variant.loraplus_ratio=16")
    assert config.variant_class.label(config.options) == "peft:lora(loraplus_ratio=16)"
    assert config.config_hash != config_of("variant.method=lora").config_hash
    with pytest.raises(ConfigError, match="loraplus_ratio is for LoRA's B matrices"):
        config_of("variant.method=ia3", "variant.loraplus_ratio=16")
    with pytest.raises(ConfigError, match="loraplus_ratio=0.5: must be a number >= 1"):
        config_of("variant.method=lora", "variant.loraplus_ratio=0.5")
