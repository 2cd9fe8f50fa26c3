"""A small CNN, an LSTM and a GRU train on a hal device with the CPU's losses (issue 7's "done when").

Data are made on the CPU from fixed seeds and moved; each model starts from the same seeded weights on both
devices and takes a few SGD steps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

STEPS = 4


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.RNNBase]):
        super().__init__()
        self.rnn = cell(input_size=6, hidden_size=12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _losses(make_model, inputs, targets, device) -> list[float]:
    torch.manual_seed(0)
    model = make_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for x, y in zip(inputs, targets):
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _data(shape, classes):
    g = torch.Generator().manual_seed(1)
    return ([torch.randn(*shape, generator=g) for _ in range(STEPS)],
            [torch.randint(0, classes, (shape[0],), generator=g) for _ in range(STEPS)])


def test_small_cnn_trains_with_the_cpus_losses(emu_dev):
    inputs, targets = _data((8, 3, 16, 16), 10)
    losses = _losses(SmallCNN, inputs, targets, emu_dev)
    assert losses == pytest.approx(_losses(SmallCNN, inputs, targets, "cpu"), rel=1e-4)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_recurrent_model_trains_with_the_cpus_losses(emu_dev, cell):
    inputs, targets = _data((4, 7, 6), 3)
    losses = _losses(lambda: Recurrent(cell), inputs, targets, emu_dev)
    assert losses == pytest.approx(_losses(lambda: Recurrent(cell), inputs, targets, "cpu"), rel=1e-4)
