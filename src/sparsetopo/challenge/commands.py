"""``sparsetopo challenge ...``: run, generate and inputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sparsetopo.desc.hparams import finite_float
from sparsetopo.errors import ConfigError, UserError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "challenge",
        help="the Sparse DNN Graph Challenge: run, generate networks, regenerate inputs",
        description="The MIT/IEEE/Amazon Sparse DNN Graph Challenge: RadiX-Net inference networks in the "
                    "official file formats, and a fast inference engine reporting the challenge's rate.",
    )
    sub = parser.add_subparsers(dest="challenge_command", metavar="SUBCOMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run inference, check the categories against the truth, print the rate",
        description="Run Y <- min(max(Y W + b, 0), 32) (bias on nonzeros) through every layer, then compare "
                    "the inputs whose final row is nonzero (the categories) with the truth file. Prints the "
                    "inference time, the rate (inputs x edges / time, in edges per second) and the rate per "
                    "core. Exit status 1 when the categories differ from the truth.",
    )
    run.add_argument("--neurons", type=_positive, required=True,
                     help="neurons per layer: 1024, 4096, 16384 or 65536 in the official challenge")
    run.add_argument("--layers", type=_positive, required=True,
                     help="number of layers to run: 120, 480 or 1920 in the official challenge")
    run.add_argument("--data-dir", default=None,
                     help="data root holding graph-challenge/neuronN/nN-lK.tsv[.gz], sparse-images-N.tsv[.gz] "
                          "and neuronN-lL-categories.tsv[.gz] (default: $SPARSETOPO_DATA, else "
                          "~/.cache/sparsetopo/data); only read")
    run.add_argument("--inputs", default=None, metavar="FILE|mnist",
                     help="inputs file in the challenge format (may hold only the first K images: the truth is "
                          "then restricted to inputs 1..K), or 'mnist' to regenerate all 60,000 from the MNIST "
                          "training images under the data root (default: sparse-images-N.tsv[.gz] under the "
                          "data root)")
    run.add_argument("--count", type=_positive, default=None,
                     help="use only the first COUNT inputs (the truth is restricted to them)")
    run.add_argument("--truth", default=None, metavar="FILE",
                     help="truth categories file (default: neuronN-lL-categories.tsv[.gz] under the data root "
                          "for the official network; none for a generated one)")
    run.add_argument("--generate", action="store_true",
                     help="build the network from RadiX-Nets in memory instead of reading weight files "
                          "(first layers exactly the RadiX-Net, later ones seeded row/column permutations)")
    run.add_argument("--seed", type=_non_negative, default=0, help="seed of --generate's permutations (default 0)")
    run.add_argument("--bias", type=finite_float, default=None,
                     help="bias (default: the official one for the size: -0.30, -0.35, -0.40, -0.45)")
    run.add_argument("--backend", choices=("numba", "scipy", "torch-cuda"), default="numba",
                     help="numba: the fast multithreaded kernel (default); scipy: the single-threaded sparse "
                          "matrix-product reference; torch-cuda: dense activations times cuSPARSE CSR on the "
                          "GPU, only where torch sees a CUDA device")
    run.add_argument("--threads", type=_positive, default=None,
                     help="threads for the numba backend (default: all the cores numba may use); the rate per "
                          "core divides by this")
    run.add_argument("--batch", type=_positive, default=None,
                     help="inputs held in memory at a time (numba: default as many as fit in 256 MiB of "
                          "activations; torch-cuda: default all)")
    run.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="arithmetic precision (default float32); the numba and scipy backends give bit-identical "
                          "results in the same precision")
    run.add_argument("--no-cache", action="store_true",
                     help="parse the text files (or build the --generate network in memory) every time instead "
                          "of using the binary cache in the user cache folder ($SPARSETOPO_CACHE or "
                          "~/.cache/sparsetopo, under challenge/)")
    run.add_argument("--write-categories", default=None, metavar="FILE",
                     help="write the categories found, in the truth file format")
    run.add_argument("--show", type=_positive, default=10,
                     help="how many differing categories to list on a mismatch (default 10)")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    run.set_defaults(handler=cmd_run)

    gen = sub.add_parser(
        "generate",
        help="write a challenge-style network in the official weight format",
        description="Write OUT/neuronN/nN-l1.tsv .. nN-lL.tsv: the first log2(N/16) layers are exactly the "
                    "RadiX-Net with systems (2,...,2) and Kronecker width 16 (32 nonzeros per row and column, "
                    "every weight 0.0625), later layers are copies with seeded row and column permutations.",
    )
    gen.add_argument("--neurons", type=_positive, required=True,
                     help="neurons per layer: 16 times a power of two, at least 32 (1024, 4096, ... officially)")
    gen.add_argument("--layers", type=_positive, required=True, help="number of layers to write")
    gen.add_argument("--out", required=True, help="folder to write neuronN/ into (created if needed)")
    gen.add_argument("--seed", type=_non_negative, default=0, help="seed of the permutations (default 0)")
    gen.add_argument("--gzip", action="store_true", help="write .tsv.gz files")
    gen.set_defaults(handler=cmd_generate)

    inp = sub.add_parser(
        "inputs",
        help="regenerate the challenge inputs from MNIST",
        description="Resize the MNIST training images to sqrt(N) x sqrt(N) by FFT resampling, binarise them "
                    "at a global threshold and write them in the challenge inputs format (column-major "
                    "pixels). No exact method for the official file is known: at 1024 neurons this gives "
                    "the official count of nonzeros and differs from it in a few hundred pixels per 1,200 "
                    "images.",
    )
    inp.add_argument("--neurons", type=_positive, default=1024,
                     help="neurons (a perfect square: 1024, 4096, 16384, 65536; default 1024)")
    inp.add_argument("--out", required=True, help="file to write (sparse-images-N.tsv; .gz compresses)")
    inp.add_argument("--data-dir", default=None,
                     help="data root holding mnist/ (default: $SPARSETOPO_DATA, else ~/.cache/sparsetopo/data)")
    inp.add_argument("--count", type=_positive, default=None,
                     help="only the first COUNT training images (default all 60,000)")
    inp.add_argument("--threshold", type=finite_float, default=None,
                     help="binarisation threshold as a fraction of 255 (default 0.72404705)")
    inp.add_argument("--compare", default=None, metavar="FILE",
                     help="an inputs file to compare with: prints the pixels that differ over its rows")
    inp.set_defaults(handler=cmd_inputs)


def _progress(label: str):
    if not sys.stderr.isatty():
        return None

    def report(k: int, total: int) -> None:
        print(f"\r{label} {k}/{total}", end="" if k < total else "\n", file=sys.stderr, flush=True)

    return report


def _load_inputs(args: argparse.Namespace, neurons: int) -> tuple[Any, str]:
    from sparsetopo.challenge.files import inputs_path, load_inputs_file

    if args.inputs == "mnist":
        from sparsetopo.challenge.files import cached_mnist_inputs

        return cached_mnist_inputs(neurons, args.data_dir, cache=not args.no_cache), "regenerated from MNIST"
    if args.inputs is not None:
        path = Path(args.inputs)
    else:
        path = inputs_path(neurons, args.data_dir)
        if path is None:
            from sparsetopo.challenge.files import challenge_dirs

            where = " or ".join(str(d) for d in challenge_dirs(args.data_dir))
            raise UserError(f"no sparse-images-{neurons}.tsv[.gz] under {where}; give --inputs FILE, or "
                            f"--inputs mnist to regenerate them from MNIST")
    return load_inputs_file(path, neurons, cache=not args.no_cache), str(path)


def cmd_run(args: argparse.Namespace) -> int:
    from sparsetopo.challenge.backends import rate, run_backend
    from sparsetopo.challenge.files import cached_generated_network, load_network, truth_path
    from sparsetopo.challenge.formats import read_truth, write_truth
    from sparsetopo.challenge.generate import generate_network
    from sparsetopo.challenge.network import default_bias

    n, n_layers = args.neurons, args.layers
    bias = default_bias(n) if args.bias is None else args.bias
    if args.backend == "scipy" and args.threads not in (None, 1):
        raise ConfigError(f"the scipy backend is single-threaded; --threads {args.threads} is not possible")
    if args.generate:
        if args.no_cache:
            network = generate_network(n, n_layers, args.seed, bias=bias)
        else:
            network = cached_generated_network(n, n_layers, args.seed, bias=bias)
        source = f"generated from RadiX-Nets, seed {args.seed}"
    else:
        network = load_network(n, n_layers, args.data_dir, bias=bias, cache=not args.no_cache,
                               progress=_progress("parsing layer"))
        source = network.meta.get("source", "")
    inputs, inputs_source = _load_inputs(args, n)
    if args.count is not None:
        if args.count > inputs.shape[0]:
            raise ConfigError(f"--count {args.count} exceeds the {inputs.shape[0]} inputs given")
        inputs = inputs[: args.count]
    n_in = inputs.shape[0]
    truth_file = Path(args.truth) if args.truth else (None if args.generate else truth_path(n, n_layers, args.data_dir))
    truth = read_truth(truth_file) if truth_file is not None else None

    timed = run_backend(args.backend, network, inputs, threads=args.threads, batch=args.batch, dtype=args.dtype)
    found = timed.result.categories
    r = rate(n_in, network.edges, timed.seconds)
    report: dict[str, Any] = {
        "neurons": n, "layers": n_layers, "edges": network.edges, "bias": bias, "network": source,
        "inputs": n_in, "inputs_source": inputs_source, "backend": timed.backend, "threads": timed.threads,
        "dtype": args.dtype, "seconds": timed.seconds, "rate": r, "rate_per_core": r / timed.threads,
        "categories": int(found.size),
    }
    status = 0
    if truth is not None:
        expected = truth[truth <= n_in]
        missing = np.setdiff1d(expected, found)
        extra = np.setdiff1d(found, expected)
        report.update({"truth": str(truth_file), "truth_categories": int(expected.size),
                       "missing": missing[: args.show].tolist(), "extra": extra[: args.show].tolist(),
                       "n_missing": int(missing.size), "n_extra": int(extra.size),
                       "match": bool(missing.size == 0 and extra.size == 0)})
        status = 0 if report["match"] else 1
    if args.write_categories:
        write_truth(args.write_categories, found)
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return status
    print(f"network     {n} neurons x {n_layers} layers, {network.edges:,} edges, bias {bias:g} ({source})")
    print(f"inputs      {n_in:,} ({inputs_source})")
    print(f"backend     {timed.backend}, {timed.threads} thread{'s' if timed.threads > 1 else ''}, {args.dtype}")
    print(f"time        {timed.seconds:.4f} s")
    print(f"rate        {r:.3e} edges/s ({r / timed.threads:.3e} per core)")
    print(f"categories  {found.size:,}")
    if truth is not None:
        limit = f" (inputs 1..{n_in})" if truth.size and truth.max() > n_in else ""
        if report["match"]:
            print(f"truth       match: {found.size:,} of {report['truth_categories']:,} categories{limit}")
        else:
            print(f"truth       MISMATCH against {truth_file}{limit}: {report['n_missing']} missing, "
                  f"{report['n_extra']} extra of {report['truth_categories']:,}")
            if report["n_missing"]:
                print(f"  missing   {', '.join(map(str, report['missing']))}"
                      f"{' ...' if report['n_missing'] > args.show else ''}")
            if report["n_extra"]:
                print(f"  extra     {', '.join(map(str, report['extra']))}"
                      f"{' ...' if report['n_extra'] > args.show else ''}")
    else:
        print("truth       none (no truth file for this network)")
    return status


def cmd_generate(args: argparse.Namespace) -> int:
    from sparsetopo.challenge.generate import base_systems, write_network

    base_systems(args.neurons)           # refuse bad sizes before writing anything
    paths = write_network(args.out, args.neurons, args.layers, args.seed, compress=args.gzip,
                          progress=_progress("writing layer"))
    print(f"wrote {len(paths)} layers of {args.neurons} neurons to {paths[0].parent}")
    return 0


def cmd_inputs(args: argparse.Namespace) -> int:
    from sparsetopo.challenge.files import load_inputs_file
    from sparsetopo.challenge.formats import write_inputs
    from sparsetopo.challenge.generate import MNIST_THRESHOLD, mnist_inputs

    threshold = MNIST_THRESHOLD if args.threshold is None else args.threshold
    reference = load_inputs_file(args.compare, args.neurons) if args.compare else None
    mat = mnist_inputs(args.neurons, args.data_dir, count=args.count, threshold=threshold)
    write_inputs(args.out, mat)
    print(f"wrote {mat.shape[0]:,} inputs, {mat.nnz:,} nonzeros, to {args.out}")
    if reference is not None:
        rows = min(reference.shape[0], mat.shape[0])
        diff = (mat[:rows] != reference[:rows].astype(bool).astype(np.float64)).nnz
        print(f"compared with {args.compare}: {diff:,} of {rows * args.neurons:,} pixels differ over "
              f"inputs 1..{rows}")
    return 0
