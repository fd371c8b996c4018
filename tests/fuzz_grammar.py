"""Grammar of the command-line fuzz suite: cheap base commands, hostile values, hostile files.

Used by ``tests/test_fuzz.py`` (a bounded, seeded profile run in CI, in-process) and by
``scripts/fuzz_cli.py`` (a longer profile, each probe in a fresh process with a time limit).
Every probe is a base command that finishes in well under a second, with one or two flags
replaced by a hostile value, a flag dropped or an unknown one added, so that a probe either
fails validation at once or runs the cheap base problem. The contract checked on every probe:

- the exit code is one of 0 (success), 1 (a check failed), 2 (bad input), 3 (not certified or
  solver failure), 130/143 (interrupted);
- no traceback; exit 2 prints exactly one line on stderr;
- a successful run prints no ``nan`` where a number is expected.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

#: Exit codes a probe may end with.
EXIT_CODES = {0, 1, 2, 3, 130, 143}


def prints_nan(out: str, argv: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether ``out`` shows a ``nan`` number; words holding a path (``wrote /x/nan.json``)
    or a value the probe typed (``sweep ... --out nan`` prints its output file ``nan``) are
    not numbers and are skipped."""
    typed = {a.lower() for a in argv}
    words = " ".join(
        w for w in out.lower().split() if "/" not in w and w.strip(".,;:()'\"") not in typed
    )
    return re.search(r"(?<![a-z])nan(?![a-z])", words) is not None

#: Values that have broken parsers before: non-finite and extreme numbers, integers beyond
#: float64 and int64, malformed lists, text that Python's float() accepts but people do not mean.
HOSTILE_VALUES = (
    "",
    " ",
    "0",
    "-1",
    "-0",
    "1e300",
    "-1e300",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "1e20",
    "9007199254740993",
    "1152921504606846976",
    "99999999999999999999999",
    "0.5",
    "abc",
    ",",
    "1,,2",
    "1,2",
    "1,nan",
    "1e-300,1,1",
    "1e300,1,1",
    "\ufeff1",
    "\uff11",
    "0x10",
    "--",
)


def base_commands(tmp: Path) -> dict[str, list[str]]:
    """One cheap, valid command per subcommand, writing only inside ``tmp``."""
    grid = tmp / "grid.toml"
    grid.write_text(
        'methods = ["structured"]\nlosses = ["ce", "ldt"]\ngamma = [0.5]\n'
        "[counts.step]\nk = [4]\nR = [10]\nrho = 0.5\nn_min = 1\n"
    )
    model = tmp / "model.npz"
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [6, 4, 2])
    features = rng.normal(size=(labels.size, 4)) + 3 * np.eye(4)[labels]
    np.savez(model, W=rng.normal(size=(3, 4)), features=features, labels=labels)
    return {
        "solve": ["solve", "--counts", "3,2,1", "--method", "structured"],
        "solve-nonconvex": ["solve", "--counts", "2,1,1", "--method", "nonconvex"],
        "verify": ["verify", "--counts", "3,2,1", "--methods", "theory,structured"],
        "tune": ["tune", "--counts", "3,2,1", "--loss", "ldt", "--target", "etf-classifiers"],
        "path": ["path", "--counts", "2,1,1", "--lambdas", "1e-1", "--maxiter", "50"],
        "train": ["train", "--counts", "2,1,1", "--steps", "20", "--records", "3"],
        "plot": ["plot", "grams", "--counts", "3,2,1", "--out", str(tmp / "fig.png")],
        "sweep": ["sweep", str(grid), "--out", str(tmp / "sweep.jsonl"), "--quiet"],
        "analyze": ["analyze", str(model)],
    }


def hostile_files(tmp: Path) -> dict[str, Path]:
    """Files that a reader must refuse in one line (or read right): name -> path.

    Names starting with ``ok-`` are valid label files whose counts are ``[2, 2, 1]``.
    """
    out: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        path = tmp / name
        path.write_bytes(data)
        out[name] = path

    put("empty.npy", b"")
    put("empty.txt", b"")
    put("empty.npz", b"")
    good = tmp / "good.npy"
    np.save(good, np.array([0, 0, 1, 1, 2]))
    put("truncated.npy", good.read_bytes()[:-3])
    put("header-only.npy", good.read_bytes()[:64])
    put("binary.npy", bytes(range(256)) * 8)
    put("binary.txt", bytes(range(256)) * 8)
    put("binary.npz", b"PK\x03\x04" + bytes(range(256)))
    # a header that claims 10^12 labels over a few bytes: must not allocate 8 TB
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += " " * (63 - len(header) % 64) + "\n"
    size = len(header).to_bytes(2, "little")
    put("huge-header.npy", b"\x93NUMPY\x01\x00" + size + header.encode())
    for name, arr in {
        "float.npy": np.array([0.0, 0.5, 1.0]),
        "nan.npy": np.array([0.0, np.nan, 1.0]),
        "complex.npy": np.array([0, 1j]),
        "bool.npy": np.array([True, False]),
        "strings.npy": np.array(["a", "b"]),
        "negative.npy": np.array([0, -1, 1]),
        "matrix.npy": np.zeros((3, 3, 3), dtype=int),
        "one-class.npy": np.zeros(5, dtype=int),
    }.items():
        path = tmp / name
        np.save(path, arr)
        out[name] = path
    objects = tmp / "objects.npy"
    np.save(objects, np.array([0, "a", None], dtype=object), allow_pickle=True)
    out["objects.npy"] = objects
    put("pickle.npy", pickle.dumps([0, 0, 1, 1, 2]))
    put("pickle.txt", pickle.dumps([0, 0, 1, 1, 2]))
    put("beyond-int64.txt", b"0\n1\n99999999999999999999999\n")
    put("words.txt", b"cat\ndog\n")
    put("nan.txt", b"0\nnan\n1\n")
    put("ok-bom.csv", "\ufeff0,0,1,1,2".encode())
    put("ok-bom-lines.txt", "\ufeff0\n0\n1\n1\n2\n".encode())
    put("ok-crlf.txt", b"0\r\n0\r\n1\r\n1\r\n2\r\n")
    put("ok-blank-lines.txt", b"\n0\n0\n\n1\n1\n2\n\n")
    # model files for analyze
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), [4, 3, 2])
    feats = rng.normal(size=(labels.size, 4))
    w = rng.normal(size=(3, 4))
    for name, arrays in {
        "model-missing-keys.npz": {"A": w},
        "model-nan.npz": {"W": w * np.nan, "features": feats, "labels": labels},
        "model-zero.npz": {"W": 0 * w, "features": 0 * feats, "labels": labels},
        "model-tiny.npz": {"W": 1e-300 * w, "features": 1e-300 * feats, "labels": labels},
        "model-huge.npz": {"W": 1e300 * w, "features": 1e300 * feats, "labels": labels},
        "model-mismatch.npz": {"W": w, "features": feats[:-1], "labels": labels},
        "model-float-labels.npz": {"W": w, "features": feats, "labels": labels + 0.5},
    }.items():
        path = tmp / name
        np.savez(path, **arrays)
        out[name] = path
    obj = tmp / "model-objects.npz"
    with zipfile.ZipFile(obj, "w") as zf, zf.open("W.npy", "w") as fh:
        np.lib.format.write_array(fh, np.array([w, None], dtype=object), allow_pickle=True)
    out["model-objects.npz"] = obj
    return out


def mutate(base: list[str], draw_index, draw_value) -> list[str]:
    """One probe from ``base``: replace a flag's value, drop a token or add a hostile flag.

    ``draw_index(n)`` returns an integer in ``[0, n)`` and ``draw_value()`` a hostile value, so
    that hypothesis (tests) and a seeded generator (scripts) drive the same grammar.
    """
    argv = list(base)
    flags = [i for i, a in enumerate(argv) if a.startswith("--")]
    kind = draw_index(4)
    if kind == 0 and flags:  # replace the value of an existing flag
        i = flags[draw_index(len(flags))]
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            argv[i + 1] = draw_value()
        else:
            argv.insert(i + 1, draw_value())
    elif kind == 1 and len(argv) > 1:  # drop one token (a value or a flag)
        del argv[1 + draw_index(len(argv) - 1)]
    elif kind == 2:  # add a flag that some subcommand takes, with a hostile value
        name = EXTRA_FLAGS[draw_index(len(EXTRA_FLAGS))]
        argv += [name, draw_value()]
    else:  # two replacements
        for _ in range(2):
            if flags:
                i = flags[draw_index(len(flags))]
                if i + 1 < len(argv):
                    argv[i + 1] = draw_value()
    return argv


#: Flags taken by at least one subcommand, added to any base command by :func:`mutate`.
EXTRA_FLAGS = (
    "--gamma",
    "--tau",
    "--scales",
    "--margins",
    "--dim",
    "--loss",
    "--level",
    "--method",
    "--restarts",
    "--alternations",
    "--seed",
    "--steps",
    "--records",
    "--lr",
    "--lambdas",
    "--range",
    "--jobs",
    "--n-min",
    "--n-max",
    "--json",
    "--solver",
)
