"""The paper's deep-net study: train nets on a STEP subset with each loss, measure every run.

Protocol (defaults, Behnia et al., AISTATS 2023, deep-net experiments): a STEP-imbalanced
training subset (``R = 10``, ``rho = 1/2``, 150 examples per majority class of scikit-learn's
digits), the MLP 6 x 2048 with BatchNorm and ReLU and a classifier without bias
(:mod:`ucfm_svm.nets.models`), SGD with learning rate 0.1, momentum 0.9, weight decay 5e-4 on
every parameter, batch 128, learning rate times 0.1 at 1/3 and 2/3 of the epochs; CE once, and
CDT and LDT for every gamma of ``linspace(-1.5, 1.5, 13)``. ``lr_drops=False`` keeps the
learning rate constant instead (measured to bring the geometry much closer to the prediction:
the drops freeze it; docs/nets.md). Every run is measured by a
:class:`~ucfm_svm.nets.monitor.GeometryMonitor` (centring ``"rowspace"``, docs/theory.md §16)
along training on the training set, against the certified UF-CS-SVM of its loss.

The classifier is initialized without its loss-invisible component (``u^T W = 0`` for ``u``
proportional to ``Delta^{-1} 1``, :func:`~ucfm_svm.nets.monitor.visible_classifiers`): that
component never receives a gradient and does not change any logit difference, so every
loss-visible quantity of the run is the same as with PyTorch's default initialization.

Each run writes ``runs/<name>.jsonl`` (one monitor record per measured epoch) and, when it
finishes, ``runs/<name>.json`` (its summary); a rerun skips the runs with a summary, so a killed
study resumes at the run it was in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..files import MARKDOWN_MARK, check_output, figure_pair, json_text, write_output
from ..result import jsonable
from ..solvers.step_theory import step_geometry_for_loss
from ..validation import check_float, check_int, fail
from .data import DATASETS, ImageData, load_dataset, step_subset
from .losses import family_loss
from .models import MODELS, build_model
from .monitor import CENTRINGS, GeometryMonitor, visible_classifiers

#: The paper's gamma grid for CDT and LDT.
PAPER_GAMMAS = tuple(float(g) for g in np.linspace(-1.5, 1.5, 13))
#: Losses the study trains (the gamma grid applies to cdt and ldt).
STUDY_LOSSES = ("ce", "cdt", "ldt")
#: Train accuracy at which the paper counts a run as converged.
CONVERGED_ACCURACY = 0.99


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study (defaults: the paper's protocol on digits)."""

    data: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    width: int = 2048
    depth: int = 6
    R: float = 10.0
    rho: float = 0.5
    n_maj: int = 150
    epochs: int = 350
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_drops: bool = True
    batch_size: int = 128
    losses: tuple[str, ...] = STUDY_LOSSES
    gammas: tuple[float, ...] = PAPER_GAMMAS
    measure_every: int = 10
    centring: str = "rowspace"
    seed: int = 0
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            raise fail("--data", "one of " + ", ".join(DATASETS), self.data)
        if self.model not in MODELS:
            raise fail("--model", "one of " + ", ".join(MODELS), self.model)
        if self.centring not in CENTRINGS:
            raise fail("--centring", "one of " + ", ".join(CENTRINGS), self.centring)
        for name in ("width", "depth", "epochs", "batch_size", "measure_every", "n_maj"):
            check_int("--" + name.replace("_", "-"), getattr(self, name), low=1)
        check_int("--seed", self.seed, low=0)
        check_float("--R", self.R, low=1.0)
        check_float("--rho", self.rho, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("--lr", self.lr, low=0.0, low_open=True)
        check_float("--momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check_float("--weight-decay", self.weight_decay, low=0.0)
        if not self.losses:
            raise fail("--losses", "a non-empty list of " + ", ".join(STUDY_LOSSES), "")
        for loss in self.losses:
            if loss not in STUDY_LOSSES:
                raise fail("--losses", "a list of " + ", ".join(STUDY_LOSSES), loss)
        if any(loss != "ce" for loss in self.losses) and not self.gammas:
            raise fail("--gammas", "a non-empty list of numbers", "")
        for g in self.gammas:
            check_float("--gammas", g, low=-10.0, high=10.0)

    def runs(self) -> list[tuple[str, float | None]]:
        """``(loss, gamma)`` of every run: CE once, CDT and LDT at each gamma."""
        out: list[tuple[str, float | None]] = []
        for loss in self.losses:
            out += [(loss, None)] if loss == "ce" else [(loss, float(g)) for g in self.gammas]
        return out


def run_name(loss: str, gamma: float | None) -> str:
    """File stem of a run: ``ce``, ``ldt_g+0.500``."""
    return loss if gamma is None else f"{loss}_g{gamma:+.3f}"


def _batches(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, y.numel(), size)]


def balanced_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """Mean over classes of the per-class accuracy of ``argmax`` logits (eval mode)."""
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb, _ in _batches(x, y, 512)]).cpu().numpy()
    truth = y.cpu().numpy()
    per_class = [float(np.mean(pred[truth == c] == c)) for c in range(k) if np.any(truth == c)]
    return float(np.mean(per_class))


def train_run(
    config: StudyConfig,
    data: ImageData,
    counts: np.ndarray,
    loss: str,
    gamma: float | None,
    jsonl: Path | None = None,
    on_epoch: Callable[[int, dict | None], None] | None = None,
) -> dict:
    """Train one net with ``loss`` and measure it; returns the run's summary.

    The summary holds the settings, the final train accuracy and balanced test accuracy,
    ``converged`` (train accuracy >= 0.99), the final monitor record and the measured epochs'
    records (``history``).
    """
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    x = torch.as_tensor(data.x_train, device=device)
    y = torch.as_tensor(data.y_train, device=device)
    k = data.k
    model = build_model(
        config.model, data.input_shape, k, width=config.width, depth=config.depth
    ).to(device)
    monitor = GeometryMonitor(counts, loss, gamma=gamma, centring=config.centring, path=jsonl)
    with torch.no_grad():
        W = model.classifier.weight
        visible = visible_classifiers(W.double().cpu().numpy(), monitor.spec.Delta)
        W.copy_(torch.as_tensor(visible, dtype=W.dtype, device=device))
    criterion = family_loss(loss, counts, gamma=gamma).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    milestones = sorted({max(1, config.epochs // 3), max(1, 2 * config.epochs // 3)})
    if not config.lr_drops:
        milestones = [config.epochs + 1]
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.1)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    measure = _batches(x, y, 512)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(y.numel(), generator=generator).to(device)
        total = 0.0
        for i in range(0, y.numel(), config.batch_size):
            idx = order[i : i + config.batch_size]
            if idx.numel() < 2:  # BatchNorm needs two examples; drop a last batch of one
                continue
            optimizer.zero_grad(set_to_none=True)
            value = criterion(model(x[idx]), y[idx])
            value.backward()
            optimizer.step()
            total += float(value.detach()) * idx.numel()
        schedule.step()
        record = None
        if epoch % config.measure_every == 0 or epoch == config.epochs or epoch == 1:
            record = monitor(
                model,
                measure,
                model.classifier,
                epoch=epoch,
                train_loss=total / y.numel(),
                lr=optimizer.param_groups[0]["lr"],
            )
        if on_epoch is not None:
            on_epoch(epoch, record)
    final = monitor.records[-1]
    test = (
        balanced_accuracy(
            model,
            torch.as_tensor(data.x_test, device=device),
            torch.as_tensor(data.y_test, device=device),
            k,
        )
        if data.y_test.size
        else None
    )
    return jsonable(
        {
            "loss": loss,
            "gamma": gamma,
            "counts": counts,
            "train_accuracy": final["accuracy"],
            "converged": final["accuracy"] >= CONVERGED_ACCURACY,
            "balanced_test_accuracy": test,
            "seconds": time.perf_counter() - started,
            "final": final,
            "history": monitor.records,
        }
    )


def closed_form_curves(config: StudyConfig, k: int, points: int = 121) -> dict:
    """Closed-form STEP geometry (docs/theory.md §5) of CDT and LDT on a fine gamma grid.

    Keys ``gamma`` and, per loss, the classifier and embedding squared-norm ratios
    (majority over minority) and grouped cosines for ``k`` classes; ``ce`` holds the CE values.
    """
    lo = min([*config.gammas, 0.0])
    hi = max([*config.gammas, 0.0])
    grid = np.linspace(lo, hi, points)

    def entry(loss: str, gamma: float | None) -> dict:
        g = step_geometry_for_loss(k, config.R, config.rho, loss, gamma)
        return {
            "classifier:norm_ratio": g.classifier_norm_ratio**2,
            "embedding:norm_ratio": g.embedding_norm_ratio**2,
            **{f"classifier:cos:{key}": v for key, v in g.classifier_cosines.items()},
            **{f"embedding:cos:{key}": v for key, v in g.embedding_cosines.items()},
        }

    out: dict = {"gamma": grid.tolist(), "ce": entry("ce", None)}
    for loss in ("cdt", "ldt"):
        rows = [entry(loss, float(g)) for g in grid]
        out[loss] = {key: [r[key] for r in rows] for key in rows[0]}
    return jsonable(out)


def _same_run_settings(saved: dict | None, settings: dict) -> bool:
    """Whether a saved run was trained with ``settings`` (the loss grid aside)."""
    if saved is None:
        return False
    ignore = ("losses", "gammas")
    return {k: v for k, v in saved.items() if k not in ignore} == {
        k: v for k, v in settings.items() if k not in ignore
    }


def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    progress: bool = True,
    on_run: Callable[[str, dict, bool], None] | None = None,
) -> dict:
    """Run (or resume) every run of ``config`` under ``out`` and return the study's data.

    Finished runs (``out/runs/<name>.json`` saved with the same settings, the loss grid aside)
    are loaded, not retrained; a run without a summary starts again from scratch.
    ``on_run(name, summary, resumed)`` is called after each run. Returns ``{"config", "counts",
    "runs", "curves"}``; ``curves`` is :func:`closed_form_curves`.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    for path in output_files(out):  # checked before any work (docs/reliability.md)
        check_output(path)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    data, counts = step_subset(
        load_dataset(config.data, config.data_dir),
        config.R,
        config.rho,
        config.n_maj,
        np.random.default_rng(config.seed),
    )
    if config.model == "mlp":
        data = replace(
            data,
            x_train=data.x_train.reshape(data.x_train.shape[0], -1),
            x_test=data.x_test.reshape(data.x_test.shape[0], -1),
        )
    settings = jsonable(asdict(config))
    write_output(out / "config.json", json_text(settings))
    runs = []
    todo = config.runs()
    bar = tqdm(
        total=len(todo) * config.epochs, desc="study", unit="epoch", disable=not progress or None
    )
    try:
        for loss, gamma in todo:
            name = run_name(loss, gamma)
            summary_path = out / "runs" / f"{name}.json"
            if summary_path.is_file():
                summary = json.loads(summary_path.read_text())
                if _same_run_settings(summary.get("settings"), settings):
                    runs.append(summary)
                    bar.update(config.epochs)
                    if on_run is not None:
                        on_run(name, summary, True)
                    continue
            jsonl = out / "runs" / f"{name}.jsonl"
            jsonl.unlink(missing_ok=True)
            bar.set_postfix_str(name)

            def tick(epoch: int, record: dict | None, name: str = name) -> None:
                bar.update(1)
                if record is not None:
                    bar.set_postfix_str(
                        f"{name} acc {record['accuracy']:.3f} "
                        f"dist {record['classifier_distance_to_prediction']:.3f}"
                    )

            summary = train_run(config, data, counts, loss, gamma, jsonl, tick)
            summary["settings"] = settings
            write_output(summary_path, json_text(summary))
            runs.append(summary)
            if on_run is not None:
                on_run(name, summary, False)
    finally:
        bar.close()
    return {
        "config": settings,
        "counts": counts.tolist(),
        "runs": runs,
        "curves": closed_form_curves(config, counts.size),
    }


#: Figures :func:`write_outputs` draws (PNG and PDF each).
FIGURES = ("panels", "distances", "accuracy")


def write_outputs(study: dict, out: str | Path) -> list[Path]:
    """Draw the study's figures and write ``report.md`` and ``study.json`` under ``out``.

    Returns the paths written.
    """
    from ..plots.nets import accuracy_figure, distance_figure, panel_figure
    from ..plots.style import save_figure

    out = Path(out)
    written = []
    figures = {
        "panels": panel_figure(study),
        "distances": distance_figure(study),
        "accuracy": accuracy_figure(study, CONVERGED_ACCURACY),
    }
    for name, fig in figures.items():
        written += save_figure(fig, out / name, dpi=130)
    path = out / "study.json"
    slim = {
        **study,
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in study["runs"]],
    }
    write_output(path, json_text(slim))
    written.append(path)
    path = out / "report.md"
    write_output(path, f"{MARKDOWN_MARK}\n{report_text(study)}")
    written.append(path)
    return written


def output_files(out: str | Path) -> list[Path]:
    """The files of ``out`` the study writes besides ``runs/`` (each must be new, empty or
    ours: :func:`ucfm_svm.files.refusal`)."""
    out = Path(out)
    names = ["config.json", "study.json", "report.md"]
    return [out / n for n in names] + [p for f in FIGURES for p in figure_pair(out / f)]


def report_text(study: dict) -> str:
    """Markdown report: settings, one table row per run, the figures."""
    c = study["config"]
    lines = [
        "# Deep-net study: trained nets against the UF-CS-SVM prediction",
        "",
        f"Data {c['data']}, STEP R={c['R']:g}, rho={c['rho']:g}, {c['n_maj']} per majority class "
        f"(counts {','.join(str(n) for n in study['counts'])}); model {c['model']}"
        + (f" {c['depth']} x {c['width']}" if c["model"] == "mlp" else "")
        + f"; SGD lr {c['lr']:g}, momentum {c['momentum']:g}, weight decay {c['weight_decay']:g}, "
        f"batch {c['batch_size']}, {c['epochs']} epochs "
        f"({'lr x0.1 at 1/3 and 2/3' if c.get('lr_drops', True) else 'constant lr'}); seed "
        f"{c['seed']}; centring {c['centring']} (docs/theory.md §16).",
        "",
        "Distances are Frobenius distances of unit-norm Grams (0 = the predicted geometry); ratios "
        "are mean squared norms, majority over minority (prediction in brackets). A run counts as "
        f"converged at train accuracy >= {CONVERGED_ACCURACY:g}.",
        "",
        "| loss | gamma | train acc. | NC1 | classifier dist. (ETF) | class-mean dist. (ETF) | "
        "classifier ratio (pred.) | class-mean ratio (pred.) | balanced test acc. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in study["runs"]:
        f = r["final"]

        def ratio(side: str, f: dict = f) -> str:
            got = f[f"{side}_groups"].get("norm_ratio")
            want = f[f"predicted_{side}_groups"].get("norm_ratio")
            return "-" if got is None else f"{got:.3f} ({want:.3f})"

        test = r["balanced_test_accuracy"]
        gamma = "-" if r["gamma"] is None else f"{r['gamma']:+.2f}"
        lines.append(
            f"| {r['loss'].upper()} | {gamma} | "
            f"{r['train_accuracy']:.4f} | {f['nc1']:.4f} | "
            f"{f['classifier_distance_to_prediction']:.3f} "
            f"({f['classifier_distance_to_etf']:.3f}) | "
            f"{f['embedding_distance_to_prediction']:.3f} ({f['embedding_distance_to_etf']:.3f}) | "
            f"{ratio('classifier')} | {ratio('embedding')} | "
            f"{'-' if test is None else f'{test:.3f}'} |"
        )
    lines += [
        "",
        "![panels](panels.png)",
        "",
        "Squared norm ratio and maj-maj, min-min, maj-min cosines of classifiers (top) and class "
        "means (bottom) against gamma: closed form (lines), trained nets (markers).",
        "",
        "![distances](distances.png)",
        "",
        "Gram distances to the prediction (solid) and to the simplex ETF (dashed) along training.",
        "",
        "![accuracy](accuracy.png)",
        "",
        "Final train accuracy per gamma.",
        "",
    ]
    return "\n".join(lines)
