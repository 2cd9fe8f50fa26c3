"""Kernels users reach at once that have no CPU kernel under their PrivateUse1 name: convolutions, LSTM / GRU
cells, record_stream; and out of memory as torch.OutOfMemoryError. Forward and gradients against the CPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

CONVS = {
    "conv1d": (F.conv1d, (2, 4, 9), (6, 4, 3), {"padding": 1}),
    "conv2d": (F.conv2d, (2, 4, 7, 7), (6, 4, 3, 3), {"stride": 2}),
    "conv3d": (F.conv3d, (1, 2, 5, 5, 5), (3, 2, 3, 3, 3), {"dilation": 1}),
    "grouped": (F.conv2d, (2, 4, 6, 6), (6, 2, 3, 3), {"groups": 2}),
    "transposed": (F.conv_transpose2d, (2, 4, 5, 5), (4, 3, 3, 3), {"stride": 2, "output_padding": 1}),
    "transposed1d": (F.conv_transpose1d, (2, 4, 5), (4, 2, 3), {"groups": 2}),
}


def _grads_match(fn, cpu_args, dev):
    dev_args = [a.detach().to(dev).requires_grad_() for a in cpu_args]
    cpu_args = [a.detach().requires_grad_() for a in cpu_args]
    want, got = fn(*cpu_args), fn(*dev_args)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
    want.square().sum().backward()
    got.square().sum().backward()
    for c, d in zip(cpu_args, dev_args):
        torch.testing.assert_close(d.grad.cpu(), c.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CONVS))
def test_convolutions(dev, case):
    fn, x_shape, w_shape, kw = CONVS[case]
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(x_shape, generator=g), torch.randn(w_shape, generator=g)
    out_channels = w_shape[1] * kw.get("groups", 1) if "transposed" in case else w_shape[0]
    b = torch.randn(out_channels, generator=g)
    _grads_match(lambda x, w, b: fn(x, w, b, **kw), [x, w, b], dev)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("bias", [True, False])
def test_recurrent_layers(dev, kind, bias):
    torch.manual_seed(2)
    cpu = getattr(torch.nn, kind)(3, 5, num_layers=2, bias=bias)
    on_dev = getattr(torch.nn, kind)(3, 5, num_layers=2, bias=bias)
    on_dev.load_state_dict(cpu.state_dict())
    on_dev.to(dev)
    x = torch.randn(4, 2, 3)
    xd = x.to(dev).requires_grad_()
    x.requires_grad_()
    want, got = cpu(x)[0], on_dev(xd)[0]
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
    want.sum().backward()
    got.sum().backward()
    torch.testing.assert_close(xd.grad.cpu(), x.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(cpu.named_parameters(), on_dev.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_lstm_cell_double_backward(dev):
    # create_graph=True takes torch's differentiable backward formula over the fused cell's workspace.
    torch.manual_seed(3)
    cell = torch.nn.LSTMCell(2, 3).to(dev)
    x = torch.randn(4, 2, device=dev, requires_grad=True)
    h, c = cell(x)
    (g,) = torch.autograd.grad((h.sum() + c.sum()), x, create_graph=True)
    g.sum().backward()
    cpu_cell = torch.nn.LSTMCell(2, 3)
    cpu_cell.load_state_dict({k: v.cpu() for k, v in cell.state_dict().items()})
    xc = x.detach().cpu().requires_grad_()
    hc, cc = cpu_cell(xc)
    (gc,) = torch.autograd.grad((hc.sum() + cc.sum()), xc, create_graph=True)
    gc.sum().backward()
    torch.testing.assert_close(g.cpu(), gc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x.grad.cpu(), xc.grad, rtol=1e-4, atol=1e-5)


def test_record_stream(emu_dev):
    s = torch.hal.Stream(emu_dev)
    x = torch.ones(1 << 16, device=emu_dev)
    s.wait_stream(torch.hal.current_stream(emu_dev))  # the fill is queued (emu's own kernel), as on CUDA
    x.record_stream(s)
    with torch.hal.stream(s):
        y = x * 2
    del x
    s.synchronize()
    assert y.cpu().eq(2).all()


def test_out_of_memory_raises_torch_oom(emu_dev):
    with pytest.raises(torch.OutOfMemoryError, match=r"out of memory: tried to allocate .* in use, .* cached, "
                                                     r".* capacity"):
        torch.empty(1 << 50, dtype=torch.uint8, device=emu_dev)
    assert torch.ones(2, device=emu_dev).sum().item() == 2   # the device still works


class _Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class _Lstm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(5, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("model, shape", [(_Cnn, (8, 1, 8, 8)), (_Lstm, (8, 4, 5))])
def test_small_models_train_with_the_cpus_losses(emu_dev, model, shape):
    torch.manual_seed(4)
    cpu = model()
    on_dev = model()
    on_dev.load_state_dict(cpu.state_dict())
    on_dev.to(emu_dev)
    x, y = torch.randn(shape), torch.randint(0, 3, (shape[0],))
    losses = {}
    for name, m, xs, ys in (("cpu", cpu, x, y), ("hal", on_dev, x.to(emu_dev), y.to(emu_dev))):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        losses[name] = []
        for _ in range(4):
            opt.zero_grad()
            loss = F.cross_entropy(m(xs), ys)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    assert losses["hal"] == pytest.approx(losses["cpu"], rel=1e-4, abs=1e-5)
    assert losses["cpu"][-1] < losses["cpu"][0]
