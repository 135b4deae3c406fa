"""The study's setups 2 and 3 end to end with train.py on tiny sizes: MAE and interactive pretraining
improve their held-out scores, write their pictures, and a fine-tuning run started from each workdir
loads the pretrained encoder; a two-process MAE run killed with SIGKILL resumes with the losses of one
uninterrupted process."""

import json
import os
import signal
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from train_runs import INTERACTIVE_STEPS, ROOT, env, losses, run, train_command

MAE_STEPS = 40
MAE = ("--config.eval_every_steps=20", f"--config.total_steps={MAE_STEPS}", "--config.checkpoint_every_steps=10",
       "--config.log_every_steps=5", "--config.final_eval_split=test")


def _rows(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _validation(workdir, key):
    return {r["step"]: r[key] for r in _rows(workdir) if key in r}


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("mae")
    result = run(train_command(workdir, data_dir, *MAE, arg="mae"))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _encoder_loaded(pretrained, data_dir, tmp_path, *extra):
    """Fine-tunes from ``pretrained`` (decoder only, so the encoder lands in frozen/ as loaded)."""
    from samjax.checkpoint import latest_model_params

    workdir = tmp_path / "finetune"
    result = run(train_command(workdir, data_dir, f"--config.init_checkpoint={pretrained}",
                               "--config.train.scope=decoder", "--config.total_steps=1", *extra))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded {pretrained}" in result.stdout
    before = {k: v for k, v in latest_model_params(pretrained).items() if k.startswith("image_encoder.")}
    after = latest_model_params(workdir)
    assert before and all(np.array_equal(after[k], v) for k, v in before.items())


def test_mae_reconstruction_improves_and_chains_into_finetuning(mae_run, data_dir, tmp_path):
    val = _validation(mae_run, "val_loss")
    assert sorted(val) == [0, 20, 40]
    assert val[40] < 0.8 * val[0], val  # held-out loss on the hidden patches, masks fixed by the seed
    metrics = json.load(open(mae_run / "eval" / "metrics.json"))
    assert metrics["split"] == "test" and metrics["reconstruction_loss"] < 0.8 * val[0]
    assert (mae_run / "eval" / "reconstruction.png").is_file()
    _encoder_loaded(mae_run, data_dir, tmp_path)


def test_interactive_training_raises_click_dice_and_chains(interactive_run, data_dir, tmp_path):
    workdir, steps = interactive_run, INTERACTIVE_STEPS  # trained by tests/conftest.py, shared with tests/annotate
    box, one = _validation(workdir, "val_dice_box"), _validation(workdir, "val_dice_1click")
    curve, five = _validation(workdir, "val_dice"), _validation(workdir, "val_dice_5click")  # curve: mean over clicks
    assert box[steps] > box[0] + 0.1 and one[steps] > one[0] + 0.1 and curve[steps] > curve[0] + 0.05, (box, one, curve)
    assert five[steps] > five[0] + 0.1, five
    metrics = json.load(open(workdir / "eval" / "metrics.json"))
    assert len(metrics["dice_vs_clicks"]) == 5 and metrics["objects"] > 50 and 1 <= metrics["noc85"] <= 5
    # Clicks help on the held-out test split: no click undoes the previous ones (within rounding of a few
    # objects), and five clicks end clearly above one.
    test_curve = metrics["dice_vs_clicks"]
    assert all(b >= a - 0.03 for a, b in zip(test_curve, test_curve[1:])), test_curve
    assert test_curve[-1] >= test_curve[0] + 0.02, test_curve
    for name in ("clicks.png", "dice_vs_clicks.png", "dice_vs_clicks.csv", "objects.csv"):
        assert (workdir / "eval" / name).is_file()
    wide = [f"--config.model.overrides.{k}={v}" for k, v in
            dict(prompt_embed_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64, mask_in_chans=16).items()]
    _encoder_loaded(workdir, data_dir, tmp_path, *wide)  # the tiny interactive config's wider decoder

    # The pretrained SAM as loaded, zero-shot: eval.py without a run gives the run's own click curve, and
    # scores the automatic mask generator.
    out = tmp_path / "zero_shot"
    result = run([sys.executable, os.path.join(ROOT, "eval.py"), "--config", os.path.join(ROOT, "configs", "tiny.py"),
                  f"--config.init_checkpoint={workdir}", "--config.train.mode=box", f"--config.data.data_dir={data_dir}",
                  *wide, "--output", str(out), "--clicks", "5", "--amg", "--amg_points_per_side", "4",
                  "--protocol", "box_corrections"],
                 optimized=True)  # compiled as the run was: its click curve again, to float rounding
    assert result.returncode == 0, result.stderr[-3000:]
    zero_shot = json.load(open(out / "clicks" / "metrics.json"))
    np.testing.assert_allclose(zero_shot["dice_vs_clicks"], metrics["dice_vs_clicks"], rtol=1e-5)
    assert zero_shot["noc90"] == pytest.approx(metrics["noc90"])
    # The challenge's counting starts from the same tight box: its step 0 is the click protocol's box, per class.
    challenge = json.load(open(out / "box_corrections" / "metrics.json"))
    assert challenge["images"] == 50 and len(challenge["dsc_vs_steps"]) == 6 and 0 <= challenge["dsc_auc"] <= 4
    for name, entry in challenge["per_class"].items():
        assert entry["dsc_vs_steps"][0] == pytest.approx(metrics["per_class"][name]["dice_box"], abs=1e-6), name
    assert (out / "box_corrections" / "dsc_nsd_vs_steps.png").is_file()
    amg = json.load(open(out / "amg" / "metrics.json"))
    assert amg["units"] == 50 and set(amg["per_class"]) == {"body", "liver", "kidney", "bone", "lesion"}
    # A run that predicts one mask per prompted object cannot be scored per volume: refused, not ignored.
    result = run([sys.executable, os.path.join(ROOT, "eval.py"), "--workdir", str(workdir), "--per", "volume"])
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(
        "error: --per volume scores class maps, and this interactive run"), result.stderr[-2000:]



def test_corrections_raise_the_largest_livers(interactive_run, data_dir):
    """The five test livers a person would pick first (the largest; tests/annotate/test_trained.py clicks them on
    the page and gets eval.py's Dice for each, click after click): 3 corrections after the click in the middle
    raise their mean Dice, to where the model's eval.py curve over every liver says it should be at 4 clicks."""
    import csv

    from samjax.data import pipeline

    src = pipeline.open_source("phantoms/labeled_64", "test", data_dir)
    liver = list(src.class_names).index("liver")
    slices = np.argsort([-(r["label"] == liver).sum() for r in src.records], kind="stable")[:5]
    with open(interactive_run / "eval" / "objects.csv") as f:
        rows = {(int(r["image"]), r["class"]): r for r in csv.DictReader(f)}
    first, last = (np.mean([float(rows[(int(k), "liver")][f"dice_{n}"]) for k in slices]) for n in (1, 4))
    curve = json.load(open(interactive_run / "eval" / "metrics.json"))["per_class"]["liver"]["dice_vs_clicks"]
    assert last > first and last >= curve[3] - 0.05, (first, last, curve)


def _fed_back_mask_effect(workdir, data_dir) -> tuple[float, float]:
    """The second click of the click protocol on 16 test slices, decoded with the first click's mask fed back
    and without it: the fraction of the objects' pixels (union of both masks and the target) whose label
    differs, and the mean absolute logit difference there."""
    import jax
    from flax import nnx

    from samjax import interaction, parallel
    from samjax.evaluation import clicks as click_eval
    from samjax.evaluation.batches import eval_batches
    from samjax.modeling import forward
    from samjax.run import model as run_model
    from samjax.run.info import run_config

    cfg = run_config(str(workdir))
    cfg.init_checkpoint, cfg.data.data_dir = str(workdir), str(data_dir)
    model = run_model.build_model(cfg, None, log=lambda m: None)
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    _, batch = next(eval_batches(cfg, mesh, click_eval.KEYS, "test", 16, prompts=click_eval.eval_prompts(cfg, 6),
                                 low_res_size=run_model.model_spec(cfg).low_res_size))

    graphdef, state = nnx.split(model)

    @jax.jit
    def second_click(state, batch):
        model = nnx.merge(graphdef, state)
        b, k = batch["object_valid"].shape
        n, s = b * k, batch["image"].shape[1]
        emb = jnp.repeat(forward.encode(model, batch["image"], batch["valid"], None), k, axis=0)
        valid = jnp.repeat(batch["valid"], k, axis=0)
        truth = batch["object_masks_full"].reshape(n, s, s) & valid
        prompts = interaction.first_prompts(batch, jnp.zeros((n,), bool), 2)
        _, _, masks, _, (coords, labels) = interaction.interact(model, emb, prompts, jnp.ones((n,), bool), truth,
                                                                valid, jax.random.key(0), jnp.ones((1,), bool),
                                                                1.0, "center", jnp.float32)
        without = interaction.decode(model, emb, coords, labels, *prompts[2:], None, jnp.float32)[0][:, 0]
        return masks[0], without, truth

    with_mask, without, truth = (np.asarray(x) for x in second_click(state, batch))
    keep = np.asarray(batch["object_valid"]).reshape(-1)
    low = truth[:, ::truth.shape[-1] // with_mask.shape[-1], ::truth.shape[-1] // with_mask.shape[-1]]
    region = ((with_mask > 0) | (without > 0) | low)[keep]
    flipped = ((with_mask > 0) != (without > 0))[keep]
    gap = np.abs(with_mask - without)[keep]
    return float(flipped.sum() / region.sum()), float(gap[region].mean())


def test_fed_back_mask_matters_after_interactive_training(interactive_run, data_dir):
    # After training, the previous round's mask must steer the next one: a model that ignores it (a mask path
    # too narrow to carry it, or a frozen random one) corrects nothing it got right before.
    flipped, gap = _fed_back_mask_effect(interactive_run, data_dir)
    assert flipped > 0.1, (flipped, gap)  # measured: 0.03 before the mask path was trained and 16 wide, 0.16 after


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_killed_and_resumed_give_the_losses_of_one(mae_run, data_dir, tmp_path):
    workdir = tmp_path / "two"

    def start():
        address = f"localhost:{_free_port()}"
        return [subprocess.Popen(train_command(workdir, data_dir, *MAE, f"--coordinator_address={address}",
                                               "--num_processes=2", f"--process_id={i}", arg="mae"),
                                 cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(2)]

    procs = start()
    metrics = workdir / "metrics.jsonl"
    import time

    deadline = time.time() + 400
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if metrics.is_file() and '"step": 25' in metrics.read_text():  # past the checkpoint of step 20
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert max(losses(workdir)) < MAE_STEPS

    procs = start()
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "2 process(es), 2 cpu device(s)" in outputs[0][0] and "resumed from" in outputs[0][0]
    two, one = losses(workdir), losses(mae_run)
    assert sorted(two) == sorted(one) == list(range(5, MAE_STEPS + 1, 5))
    np.testing.assert_allclose([two[s] for s in sorted(one)], [one[s] for s in sorted(one)], rtol=1e-5)
    np.testing.assert_allclose(list(_validation(workdir, "val_loss").values()),
                               list(_validation(mae_run, "val_loss").values()), rtol=1e-5)
