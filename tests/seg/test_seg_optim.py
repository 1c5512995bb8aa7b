"""nnU-Net's optimizer in optax vs torch.optim.SGD + clip_grad_norm_ + nnunetv2 PolyLRScheduler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.seg import optim as O

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")


def _torch_sgd(params: dict[str, np.ndarray], initial_lr: float, max_epochs: int):
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    tp = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    # nnUNetTrainer.configure_optimizers
    opt = torch.optim.SGD(list(tp.values()), initial_lr, weight_decay=3e-5, momentum=0.99, nesterov=True)
    return tp, opt, PolyLRScheduler(opt, initial_lr, max_epochs)


def test_poly_lr_matches_nnunet_scheduler():
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], 1e-2)
    sched = PolyLRScheduler(opt, 1e-2, 1000)
    schedule = O.poly_lr_schedule(1e-2, 1000, iterations_per_epoch=250)
    for epoch in (0, 1, 2, 17, 250, 500, 998, 999):
        sched.step(epoch)  # nnUNetTrainer.on_train_epoch_start: lr_scheduler.step(self.current_epoch)
        want = opt.param_groups[0]["lr"]
        np.testing.assert_allclose(float(O.poly_lr(epoch)), want, rtol=1e-6, atol=0)
        for it in (0, 1, 249):  # constant within the epoch
            np.testing.assert_allclose(float(schedule(epoch * 250 + it)), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("mode", ["count", "explicit_epoch"])
def test_three_sgd_steps_match_torch(mode):
    """3 steps (2 in epoch 0, 1 in epoch 1) with given gradients: the first and third exceed the clip norm 12."""
    rs = np.random.RandomState(0)
    params = {"conv": rs.randn(3, 3, 4, 8).astype(np.float32) * 0.3, "bias": rs.randn(8).astype(np.float32),
              "scale": (1 + 0.1 * rs.randn(8)).astype(np.float32)}
    grads = [{k: (rs.randn(*v.shape) * s).astype(np.float32) for k, v in params.items()} for s in (2.0, 0.05, 5.0)]
    norms = [np.sqrt(sum((g**2).sum() for g in gs.values())) for gs in grads]
    assert norms[0] > 12 and norms[1] < 12 and norms[2] > 12
    iters, max_epochs, initial_lr = 2, 3, 1e-2

    tp, topt, sched = _torch_sgd(params, initial_lr, max_epochs)
    if mode == "count":
        tx = O.nnunet_sgd(initial_lr, max_epochs, iterations_per_epoch=iters)
    else:
        tx = O.nnunet_sgd(initial_lr, max_epochs, iterations_per_epoch=None)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)

    @jax.jit
    def step(p, state, g, epoch):
        if mode == "explicit_epoch":
            state = O.set_epoch(state, epoch, initial_lr, max_epochs)
        updates, state = tx.update(g, state, p)
        return jax.tree_util.tree_map(lambda a, u: a + u, p, updates), state

    for i, g in enumerate(grads):
        epoch = i // iters
        if i % iters == 0:
            sched.step(epoch)
        for k, t in tp.items():
            t.grad = torch.from_numpy(g[k].copy())
        torch.nn.utils.clip_grad_norm_(list(tp.values()), 12)  # nnUNetTrainer.train_step
        topt.step()
        p, state = step(p, state, {k: jnp.asarray(v) for k, v in g.items()}, epoch)
        for k in params:
            np.testing.assert_allclose(np.asarray(p[k]), tp[k].detach().numpy(), atol=1e-6, rtol=0,
                                       err_msg=f"step {i} {k}")
        np.testing.assert_allclose(float(O.current_lr(state)), topt.param_groups[0]["lr"], rtol=1e-6)
        assert float(jnp.abs(p["conv"] - params["conv"]).max()) > 1e-4  # the step did move the params


def test_clip_matches_torch_clip_grad_norm():
    rs = np.random.RandomState(3)
    for scale in (0.01, 10.0):
        g = {"a": (rs.randn(5, 7) * scale).astype(np.float32), "b": (rs.randn(11) * scale).astype(np.float32)}
        tg = [torch.nn.Parameter(torch.zeros(v.shape)) for v in g.values()]
        for t, v in zip(tg, g.values()):
            t.grad = torch.from_numpy(v.copy())
        torch.nn.utils.clip_grad_norm_(tg, 12)
        tx = O.clip_grad_norm_torch(12)
        out, _ = tx.update({k: jnp.asarray(v) for k, v in g.items()}, tx.init(None))
        for t, k in zip(tg, g):
            np.testing.assert_allclose(np.asarray(out[k]), t.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_set_epoch_needs_nnunet_state():
    with pytest.raises(ValueError, match="hyperparams"):
        O.set_epoch(O.clip_grad_norm_torch(12).init(None), 3)
    with pytest.raises(ValueError, match="iterations_per_epoch"):
        O.poly_lr_schedule(iterations_per_epoch=0)
