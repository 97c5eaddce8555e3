"""``bench fetch SUITE``: the weights of a suite's pretrained sources, into the libraries' caches."""

from ..errors import SuiteError

NAME, ORDER = "fetch", 80
HELP = "download the weights of a suite's pretrained sources (run it while online)"


def add_arguments(parser) -> None:
    parser.add_argument("suite")


def run(args) -> int:
    """Downloads the weights of a suite's pretrained sources into the libraries' caches (needs internet)."""
    from transfer_core.pretrained import WeightsUnavailableError, fetch, weights_file

    from ..suite import load_suite

    suite = load_suite(args.suite)
    pretrained = [s.pretrained for s in suite.sources if s.pretrained]
    if not pretrained:
        print(f"{args.suite}: no pretrained sources; nothing to fetch")
        return 0
    for spec in pretrained:
        try:
            print(f"{spec.label}: already here, {weights_file(spec)}")
            continue
        except WeightsUnavailableError:
            pass
        if spec.library == "checkpoint":
            raise SuiteError(
                f"{args.suite}: source {spec.label}: {spec.file} is missing, and a checkpoint cannot be fetched"
            )
        try:
            from huggingface_hub.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # a failed download is reported below, in one line
            print(f"{spec.label}: fetched, {fetch(spec)}")
        except Exception as e:  # no network, a moved file, a full disk: one line
            raise SuiteError(
                f"{args.suite}: source {spec.label}: could not download its weights ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})"
            ) from None
    return 0
