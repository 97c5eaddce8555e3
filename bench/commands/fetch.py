"""``bench fetch SUITE``: what a suite reads that can be downloaded -- its datasets (torchvision's, with their
checksums; Hugging Face Hub datasets, into the local cache) and the weights of its pretrained sources -- so
that runs afterwards need no network."""

from bench.commands.common import add_data_root
from bench.errors import SuiteError

NAME, ORDER = "fetch", 80
HELP = "download a suite's datasets and the weights of its pretrained sources (run it while online)"


def add_arguments(parser) -> None:
    parser.add_argument("suite")
    add_data_root(parser, help="folder the datasets are downloaded into (default BENCH_DATA_ROOT or the suite's)")


def run(args) -> int:
    from bench.pipeline.suite import data_root, load_suite

    suite = load_suite(args.suite)
    fetch_data(args.suite, suite, data_root(suite, args.data_root))
    fetch_weights(args.suite, suite)
    return 0


def fetch_data(name: str, suite, root) -> None:
    """Downloads each dataset the suite reads that is not on disk yet (each once, whatever its selection)."""
    from bench.pipeline.suite import data_specs
    from transfer_core.datasets import DataUnavailableError, create_dataset_reader

    seen = set()
    for where, spec in data_specs(suite):
        reader = create_dataset_reader(spec.dataset)
        if (spec.dataset, repr(spec.options)) in seen:
            continue
        seen.add((spec.dataset, repr(spec.options)))
        try:
            reader.check(root, spec.options, download=False)
            print(f"{spec.label}: already here")
            continue
        except DataUnavailableError:
            pass
        try:
            reader.check(root, spec.options, download=True)  # what cannot be downloaded says so here
            print(f"{spec.label}: downloading into {root} ...", flush=True)
            reader.load(root, spec.options, download=True)
            reader.check(root, spec.options, download=False)
        except DataUnavailableError as e:
            raise SuiteError(f"{name}: {where} ({spec.dataset}): {e}") from None
        print(f"{spec.label}: fetched")


def fetch_weights(name: str, suite) -> None:
    """Downloads the weights of the suite's pretrained sources into the libraries' caches."""
    from transfer_core.pretrained import WeightsUnavailableError, fetch, weights_file

    for spec in [s.pretrained for s in suite.sources if s.pretrained]:
        try:
            print(f"{spec.label}: already here, {weights_file(spec)}")
            continue
        except WeightsUnavailableError:
            pass
        if spec.library == "checkpoint":
            raise SuiteError(f"{name}: source {spec.label}: {spec.file} is missing, and a checkpoint cannot be fetched")
        try:
            from huggingface_hub.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # a failed download is reported below, in one line
            print(f"{spec.label}: fetched, {fetch(spec)}")
        except Exception as e:  # no network, a moved file, a full disk: one line
            raise SuiteError(
                f"{name}: source {spec.label}: could not download its weights ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})"
            ) from None
