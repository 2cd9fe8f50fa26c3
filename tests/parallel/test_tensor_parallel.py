"""Tensor parallelism's pieces: shard layouts, the roles and gradient groups of tp stages, and the GPT block's
Megatron split (two Gloo processes) against the whole block."""
from __future__ import annotations

import multiprocessing as mp
import os

import pytest
import torch

from hal.parallel.roles import Segment, role_of, segments, tp_groups
from hal.parallel.tensor_parallel import Shard, TensorParallel, shards_of
from hal.plan.plan import Pipeline, Plan, Stage
from tests.processes import free_port


@pytest.mark.parametrize("full, view, dim, size", [((12, 4), (12, 4), 0, 3), ((12, 4), (12, 4), 1, 2),
                                                   ((24, 4), (3, 4, 2, 4), 1, 2), ((6,), (3, 2), 1, 2)])
def test_shards_take_place_and_join_back_to_the_whole(full, view, dim, size):
    whole = torch.arange(torch.Size(full).numel(), dtype=torch.float32).reshape(full)
    parts = [Shard(full, view, dim, r, size).take(whole) for r in range(size)]
    assert sum(p.numel() for p in parts) == whole.numel()
    assert len({tuple(p.reshape(-1).tolist()) for p in parts}) == size  # different parts
    assert torch.equal(Shard(full, view, dim, 0, size).join(parts), whole)
    into = torch.zeros(whole.numel())
    for r, p in enumerate(parts):
        Shard(full, view, dim, r, size).place(into, p)
    assert torch.equal(into.reshape(full), whole)


def test_qkv_shards_split_by_heads():
    """[3 * heads * head_dim, hidden] viewed as [3, heads, head_dim, hidden] and split by heads: rank 0 gets the
    query, key and value rows of head 0, not the first third of the rows (all queries)."""
    heads, hd, h = 2, 3, 4
    w = torch.arange(3 * heads * hd * h, dtype=torch.float32).reshape(3 * heads * hd, h)
    s = Shard(tuple(w.shape), (3, heads, hd, h), 1, 0, 2)
    rows = s.take(w).reshape(-1, h)
    assert torch.equal(rows, torch.cat([w[0:3], w[6:9], w[12:15]]))


def test_a_split_that_does_not_divide_is_refused_with_the_shape():
    with pytest.raises(ValueError, match=r"dimension 0 of \[10, 4\].*3 equal parts"):
        Shard((10, 4), (10, 4), 0, 0, 3)


def plan_of(*pipes):
    return Plan("t", 8, 1, [Pipeline([Stage("k", ids, layers) for ids, layers in p], 2, 4, 4) for p in pipes])


def test_roles_fan_activations_between_stages_of_different_tp():
    """Stage 0 on device 4 alone, stage 1 on 0, 1 (tp 2), stage 2 on 2 alone: rank u of a stage reads from
    rank u mod tp of the stage before; gradients go back the same way."""
    plan = plan_of([([4], (0, 1)), ([0, 1], (1, 3)), ([2], (3, 4))])
    ranks = {d: d for d in range(5)}
    r4, r0, r1, r2 = (role_of(plan, ranks, r) for r in (4, 0, 1, 2))
    assert r4.act_to == (0, 1) and r4.grad_from == 0 and r4.act_from is None
    assert (r0.act_from, r0.act_to, r0.grad_from, r0.grad_to, r0.tp_rank) == (4, (2,), 2, (4,), 0)
    assert (r1.act_from, r1.act_to, r1.grad_from, r1.grad_to, r1.tp_rank) == (4, (), 2, (), 1)
    assert r2.act_from == 0 and r2.grad_to == (0, 1) and r2.last
    assert r0.tp_ranks == r1.tp_ranks == (0, 1) and r0.tp_size == 2 and r4.tp_size == 1
    assert tp_groups(plan, ranks) == [(0, 1)]


def test_gradient_groups_pair_shards_with_their_replicas_or_pad_when_tp_differs():
    same = plan_of([([0, 1], (0, 2))], [([2, 3], (0, 2))])
    assert segments(same, {d: d for d in range(4)}) == [Segment((0, 2), ((0, 2), (1, 3)))]
    mixed = plan_of([([0, 1], (0, 2))], [([2], (0, 1)), ([3], (1, 2))])
    assert segments(mixed, {d: d for d in range(4)}) == [Segment((0, 1), ((0, 1, 2),), padded=True),
                                                         Segment((1, 2), ((0, 1, 3),), padded=True)]


def _block_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from hal.plan.model import TransformerConfig
    from hal.plan.torch_model import Block
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        block = Block(TransformerConfig("t", layers=1, hidden=16, heads=4, ffn=32, vocab=8, seq=6))
        block.tensor_parallel(TensorParallel(rank, 2, dist.group.WORLD))
        x = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        y = block(x)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        torch.save({"y": y.detach(), "x_grad": x.grad, "heads": block.heads,
                    "grads": {n: p.grad for n, p in block.named_parameters()}, "shards": shards_of(block)}, out)
    finally:
        dist.destroy_process_group()


def test_gpt_block_split_over_two_ranks_equals_the_whole_block(tmp_path):
    from hal.plan.model import TransformerConfig
    from hal.plan.torch_model import Block
    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_block_rank, args=(r, port, str(tmp_path / f"{r}.pt"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    torch.manual_seed(0)
    block = Block(TransformerConfig("t", layers=1, hidden=16, heads=4, ffn=32, vocab=8, seq=6))
    x = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    y = block(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    whole = dict(block.named_parameters())
    for r in range(2):
        o = torch.load(tmp_path / f"{r}.pt", weights_only=False)
        assert o["heads"] == 2
        torch.testing.assert_close(o["y"], y.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o["x_grad"], x.grad, rtol=1e-5, atol=1e-6)
        assert set(o["shards"]) == {"qkv.weight", "proj.weight", "up.weight", "down.weight"}
        for name, g in o["grads"].items():
            want = whole[name].grad
            if name in o["shards"]:
                want = o["shards"][name].take(want).reshape(g.shape)
            torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6, msg=f"rank {r} {name}")
