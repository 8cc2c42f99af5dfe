"""grm-bench-roofline (grm_jax/cli/bench_roofline.py): its list of matrix products is what XLA compiles (the lower bound it reports for the
speed targets rests on that list)."""
import pytest

from grm_jax.cli import bench_roofline


@pytest.mark.parametrize("program", ["eval", pytest.param("train", marks=pytest.mark.slow)])
def test_enumerated_products_match_xla_flop_count(program):
    from grm_jax.config import load_config

    cfg = load_config("tiny_test", ["MODEL.DIVISION.LAYERS=[1]"])
    products = (bench_roofline.forward_products(cfg, 2) if program == "eval"
                else bench_roofline.training_products(cfg, 2))
    ours = sum(p.flops for p in products)
    xla = bench_roofline.xla_program_flops(cfg, program, 2)
    # XLA also counts elementwise work (softmax, LayerNorm, GELU, loss), a few percent at this size
    assert xla == pytest.approx(ours, rel=0.03), (ours, xla)
    # and leaving out (or doubling) the largest product would move the total by more than that
    assert max(p.flops for p in products) > 0.03 * ours
