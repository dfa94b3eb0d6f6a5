"""Bits as a cut (issue 37): a decoder layer rounded to int8 or int4 per group of 32 weights,
recorded in the config, priced as stored, and kept through save and from_pretrained."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchao")

from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Decode  # noqa: E402
from energyprune.errors import ConfigError  # noqa: E402
from energyprune.pruning.lm_bits import GROUP, fake_quantise, quantise_layers  # noqa: E402
from energyprune.pruning.lm_export import save_lm  # noqa: E402
from tests.tiny_lms import tiny_llama  # noqa: E402

IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def test_a_group_holds_at_most_its_format_s_levels_and_rounds_to_nearest():
    w = torch.randn(8, 4 * GROUP, generator=torch.Generator().manual_seed(1))
    for dtype, levels in (("int8", 256), ("int4", 16)):
        q = fake_quantise(w, dtype)
        groups = q.view(8, 4, GROUP)
        assert all(len(g.unique()) <= levels for g in groups.reshape(-1, GROUP))
        # one step per group: its largest |w| over 127 (Q8_0) or over 8 (Q4_0, that weight
        # exactly -8 steps); rounding to nearest moves a weight by <= half a step, except
        # Q4_0's far side, which stops at +7 steps (up to one step)
        step = w.view(8, 4, GROUP).abs().amax(dim=2, keepdim=True) / (127 if levels == 256 else 8)
        bound = step / 2 if levels == 256 else step
        assert ((groups - w.view(8, 4, GROUP)).abs() <= bound + 1e-6).all()
        assert (((groups / step) - (groups / step).round()).abs() < 1e-3).all()  # on the grid
        assert torch.equal(fake_quantise(q, dtype), q)  # rounding twice is rounding once
    assert (fake_quantise(w, "int8") - w).abs().mean() < (fake_quantise(w, "int4") - w).abs().mean()
    with pytest.raises(ConfigError, match="not whole groups of 32"):
        fake_quantise(torch.randn(4, 40), "int4")


def test_quantised_layers_are_recorded_priced_as_stored_and_saved(tmp_path):
    model = tiny_llama(4)
    dense_logits = model(input_ids=IDS).logits
    quantise_layers(model, {0: "int8", 2: "int4"})
    assert model.config.energyprune_weight_bits == {
        "group_size": 32,
        "layers": {"model.layers.0": "int8", "model.layers.2": "int4"},
    }
    logits = model(input_ids=IDS).logits
    assert not torch.equal(logits, dense_logits)
    assert (logits - dense_logits).abs().max() < 0.5 * dense_logits.abs().max()
    stored = (("model.layers.0", "int8"), ("model.layers.2", "int4"))
    by_config = profile_lm(model, Decode(1, 64), "h100-sxm")
    by_hand = profile_lm(
        tiny_llama(4), Decode(1, 64), "h100-sxm", layer_weights=stored, group_size=32
    )
    assert by_config.energy_j == pytest.approx(by_hand.energy_j, rel=1e-12)
    assert by_config.energy_j < profile_lm(tiny_llama(4), Decode(1, 64), "h100-sxm").energy_j
    assert save_lm(model, tmp_path) is None  # widths are uniform: from_pretrained loads it
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(input_ids=IDS).logits, logits)
    assert profile_lm(loaded, Decode(1, 64), "h100-sxm").energy_j == pytest.approx(
        by_config.energy_j
    )
    with pytest.raises(ConfigError, match="layer 9 does not exist"):
        quantise_layers(model, {9: "int4"})


def test_bit_cuts_go_int8_then_int4_and_never_on_a_dropped_layer():
    from energyprune.pruning.lm_allocate import Cut, allocate

    cuts = [
        Cut("int4", 0, 0.0, 1.0),  # cheapest per joule, but layer 0 holds no int8 yet
        Cut("int8", 0, 0.1, 1.0),
        Cut("layer", 1, 0.2, 5.0),
        Cut("int8", 1, 0.3, 1.0),  # layer 1 is dropped by then
        Cut("int8", 2, 5.0, 1.0),
    ]
    plan = allocate(cuts, saving_j=6.0)
    assert plan.bits == {0: "int8"} and plan.drop == [1]
    assert plan.to_dict()["weight_bits"] == {0: "int8"}
    assert allocate(cuts, saving_j=100.0).bits == {0: "int8", 2: "int8"}
    stored_first = [Cut("int8", 1, 0.0, 1.0), Cut("layer", 1, 0.1, 5.0), Cut("layer", 0, 9.0, 1.0)]
    assert allocate(stored_first, saving_j=6.0).bits == {}  # the layer went after all


def _trained_llama(windows: torch.Tensor):
    """A tiny Llama that has learned the stream (each token the previous one + 1): dropping its
    layers costs loss, rounding its weights to int8 barely does (a random model's loss is
    ln 64 whatever is cut, so no criterion can tell plans apart on it)."""
    model = tiny_llama(4)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        ids = windows[torch.randint(0, len(windows), (8,))]
        logits = model(input_ids=ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_energy_plus_bits_stores_layers_as_int_and_trains_on_their_grids():
    """Priced where bytes cost energy (horowitz-45nm: DRAM per byte), the prune + bits arm
    keeps a plan with stored bits, meets the budget when re-priced, and after recovery every
    stored weight is still on its grid."""
    from energyprune.energy.lm.serving import layer_bits_of
    from energyprune.pipeline.lm_prune import LMPruneConfig, prune_lm
    from energyprune.pipeline.text import TextData
    from energyprune.pruning.decoder import decoder_layers

    g = torch.Generator().manual_seed(0)
    windows = (torch.randint(0, 64, (40, 1), generator=g) + torch.arange(32)) % 64
    data = TextData(windows[:32], windows[32:], 32, "train", "eval")
    regime = Decode(1, 64)
    cfg = LMPruneConfig(target_energy=0.7, hardware="horowitz-45nm", finetune_steps=3,
                        lr=1e-3, calib_windows=2, eval_windows=2, round_to=32,
                        method="energy+bits")  # fmt: skip
    dense = _trained_llama(windows[:32])
    result = prune_lm(dense, data, regime, cfg)
    _, stored = layer_bits_of(result.model.config)
    assert stored, "no layer was stored in fewer bits"
    ratio = (profile_lm(result.model, regime, cfg.hardware).energy_j
             / profile_lm(dense, regime, cfg.hardware).energy_j)  # fmt: skip
    assert ratio <= 0.7 + 1e-3
    layers = decoder_layers(result.model)
    for prefix, dtype in stored:
        w = layers[int(prefix.rsplit(".", 1)[1])].mlp.down_proj.weight
        assert torch.equal(fake_quantise(w, dtype), w)  # on the grid after training steps


def test_updates_smaller_than_a_grid_step_add_up_and_the_result_is_on_the_grid():
    """Quantisation-aware recovery, by hand: row 0's first group of layer 0's down_proj holds
    -0.8 (its Q4_0 peak: one step is 0.8 / 8 = 0.1) and zeros. Twelve SGD steps of 0.01 on
    weight [0, 1] move its float master to 0.12, which rounds to one step, 0.1. Rounding after
    every step instead would put it back on 0 each time (0.01 is a tenth of a step)."""
    from energyprune.pruning.lm_bits import trained_on_grid

    model = tiny_llama(2)
    linear = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        linear.weight[0, :GROUP] = 0.0
        linear.weight[0, 0] = -0.8
    quantise_layers(model, {0: "int4"})
    before = model(input_ids=IDS).logits
    with trained_on_grid(model) as any_stored:
        assert any_stored
        assert torch.equal(model(input_ids=IDS).logits, before)  # forward as stored
        master = linear.parametrizations.weight.original
        opt = torch.optim.SGD([master], lr=0.01)
        for _ in range(12):
            opt.zero_grad()
            (-linear.weight[0, 1]).backward()  # the straight-through gradient reaches it
            opt.step()
        assert master[0, 1].item() == pytest.approx(0.12, abs=1e-6)
        assert linear.weight[0, 1].item() == pytest.approx(0.1, abs=1e-6)  # what forward uses
    assert not torch.nn.utils.parametrize.is_parametrized(linear)  # a plain weight again
    assert linear.weight[0, 1].item() == pytest.approx(0.1, abs=1e-6)
    assert linear.weight[0, 0].item() == pytest.approx(-0.8, abs=1e-6)
    assert torch.equal(fake_quantise(linear.weight, "int4"), linear.weight)
    with trained_on_grid(tiny_llama(2)) as any_stored:
        assert not any_stored  # nothing recorded, nothing changed


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_the_uniform_arms_store_every_layer_and_leave_the_dense_model_alone(dtype):
    from energyprune.pipeline.lm_methods import METHODS

    dense = tiny_llama(3)
    before = dense(input_ids=IDS).logits

    def price(m):
        return profile_lm(m, Decode(1, 64), "h100-sxm")

    cut = METHODS[dtype](dense, None, None, price, None)
    assert cut.plan["weight_bits"] == {0: dtype, 1: dtype, 2: dtype}
    assert 0 < cut.ratio < 1 and torch.equal(dense(input_ids=IDS).logits, before)
    assert not hasattr(dense.config, "energyprune_weight_bits")


def test_storage_first_leaves_fewer_layers_of_the_greedy_order_to_drop():
    """Every layer as int8 weights, then the shortest prefix of the greedy order that meets
    0.2 (priced where bytes cost energy): that prefix meets, one layer fewer does not, and
    without the storage more layers of the same order would have to go."""
    from types import SimpleNamespace

    from energyprune.pipeline.lm_methods import stored_greedy
    from energyprune.pruning.lm_allocate import BUDGET_SLACK, LMPlan, priced_plan

    dense, order = tiny_llama(6), [5, 2, 4, 1, 3]
    cfg = SimpleNamespace(target_energy=0.2, round_to=32)

    def price(m):
        return profile_lm(m, Decode(1, 64), "horowitz-45nm")

    def ratio(plan: LMPlan) -> float:
        return priced_plan(dense, plan, None, 32, price, price(dense).energy_j)[1]

    _, plan, got = stored_greedy(dense, order, ("int8", None), None, cfg, price)
    k = len(plan.drop)
    assert plan.drop == order[:k] and 1 <= k < len(order)
    assert plan.bits == {i: "int8" for i in range(6) if i not in order[:k]}
    assert got == pytest.approx(ratio(plan)) and got <= 0.2 + BUDGET_SLACK
    fewer = LMPlan(
        drop=order[: k - 1], bits={i: "int8" for i in range(6) if i not in order[: k - 1]}
    )
    assert ratio(fewer) > 0.2 + BUDGET_SLACK
    unstored = next(
        n for n in range(len(order) + 1) if ratio(LMPlan(drop=order[:n])) <= 0.2 + BUDGET_SLACK
    )
    assert unstored > k
