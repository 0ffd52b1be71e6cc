"""torch.compile: no graph breaks in the attention, in training and inference, and compiled
results equal eager ones. The "aot_eager" backend traces forward and backward exactly as inductor
would see them without paying for code generation, which keeps these tests fast; the inductor
speed-ups are measured in benchmarks/compile.py."""
import pytest
import torch

import botnet
from botnet.layers import MHSA2d
from botnet.layers.attention import ATTN_IMPLS

pytestmark = pytest.mark.slow  # every test compiles (a few seconds each)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("impl", ATTN_IMPLS)
@pytest.mark.parametrize("grad", [True, False])
def test_mhsa_has_no_graph_breaks(impl, grad):
    m = MHSA2d(16, heads=2, feat_size=(4, 5), attn_impl=impl)
    with torch.set_grad_enabled(grad):
        explanation = torch._dynamo.explain(m)(torch.randn(2, 16, 4, 5))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("impl, feat", [("chunked", (4, 5)), ("chunked", (24, 30)), ("fold", (4, 5)),
                                       ("bias", (4, 5))])
def test_mhsa_fullgraph_training_matches_eager(impl, feat):
    # feat (24, 30): compiled, the chunked path splits the queries into 3 blocks (eager: 1)
    m = MHSA2d(16, heads=2, feat_size=feat, attn_impl=impl)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 16, 4, 5)
    results = []
    for fn in (m, compiled):
        xx = x.clone().requires_grad_(True)
        out = fn(xx)
        out.square().sum().backward()
        results.append([out.detach(), xx.grad] + [p.grad.clone() for p in m.parameters()])
        m.zero_grad(set_to_none=True)
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grad", [False, True])
def test_mhsa_dynamic_sizes_compile_once(grad):
    m = MHSA2d(16, heads=2, feat_size=(4, 5))
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(m, backend=counter, dynamic=True, fullgraph=True)
    with torch.set_grad_enabled(grad):
        for size in [(4, 5), (6, 3), (7, 7)]:
            compiled(torch.randn(1, 16, *size, requires_grad=grad))
    assert counter.frame_count == 1


@pytest.mark.parametrize("name, train", [("botnet_tiny", False), ("botnet_s1_tiny", True)])
def test_tiny_models_have_no_graph_breaks(name, train):
    model = botnet.create_model(name).train(train)
    with torch.set_grad_enabled(train):
        explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons
