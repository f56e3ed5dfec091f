"""`make data`: put the reference data into the project's git-ignored ``data/`` folder.

Copies from ``../shared/data`` when it is there; otherwise downloads from the paper's repository. WVS files are checked
against the sha256 sums published with the data; generated-question files are checked for structure. Every file is
written to a temporary name and renamed once complete, so an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from culturespa.utils.perms import fix_file

UPSTREAM = "https://raw.githubusercontent.com/shaoyangxu/CultureSPA/main/data"
WVS_SHA256 = {
    "wvs_questions.json": "6961729ba41c4a0dffe5ac18af42feac1e79667b8202f4148ec6d1838347875b",
    "proportions_group_by_country.json": "85fdd9c01b40fbf3ec2e94753f4a8f15b1955ba53548c24c04c9265dba26f8cb",
    "country_similarity.json": "380c299619215b5a3694baf8d5fab0925ece9731ae14eeed507ec755e2f5d900",
    "self_alignment_examples.json": "5b1d91607e96bcc920a5336bbc1123d97ffe0331f81580fd827bcf59b24f3d98",
}
GENERATED_DIR = "generated-questions-llama3-8b-instruct"
N_TOPICS = 13


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_generated(path: Path) -> None:
    items = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(items, list) or not all(
        isinstance(x, dict) and {"question", "option_lst"} <= set(x) for x in items
    ):
        raise ValueError(f"{path}: not a list of {{question, option_lst}} records")


def _install(dest: Path, fetch: callable, check: callable) -> None:  # type: ignore[valid-type]
    """Fetch into a temp file beside ``dest``, check it, then rename into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch(tmp)
        check(tmp)
        fix_file(tmp)  # mkstemp made it 0600: honour the umask
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _sha_check(name: str) -> callable:  # type: ignore[valid-type]
    def check(path: Path) -> None:
        got = sha256(path)
        if got != WVS_SHA256[name]:
            raise ValueError(f"{name}: sha256 {got} does not match the published {WVS_SHA256[name]}")

    return check


def _copy_from(src: Path) -> callable:  # type: ignore[valid-type]
    return lambda tmp: shutil.copyfile(src, tmp)


def _download(url: str) -> callable:  # type: ignore[valid-type]
    def fetch(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:
            shutil.copyfileobj(response, out)

    return fetch


def prepare(dest: Path, shared: Path | None) -> str:
    """Fill ``dest`` with wvs/ and the generated-question pool; returns where the files came from."""
    local = shared is not None and (shared / "wvs" / "wvs_questions.json").is_file()
    for name in WVS_SHA256:
        target = dest / "wvs" / name
        if target.is_file() and sha256(target) == WVS_SHA256[name]:
            continue
        source = _copy_from(shared / "wvs" / name) if local else _download(f"{UPSTREAM}/{name}")  # type: ignore[operator]
        _install(target, source, _sha_check(name))
    for topic in range(N_TOPICS):
        target = dest / GENERATED_DIR / f"topic_{topic}.json"
        if target.is_file():
            continue
        if local:
            source = _copy_from(shared / GENERATED_DIR / f"topic_{topic}.json")  # type: ignore[operator]
        else:
            source = _download(
                f"{UPSTREAM}/Meta-Llama-3-8B-Instruct/generated_questions_topic_{topic}_from_all_seed.json"
            )
        _install(target, source, _check_generated)
    (dest / ".complete").write_text("ok\n")
    return str(shared) if local else UPSTREAM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("data"))
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("CULTURESPA_SHARED", "../shared/data")))
    args = parser.parse_args(argv)
    try:
        origin = prepare(args.dest, args.shared)
    except Exception as err:  # noqa: BLE001 - one line for the user, whatever failed
        print(f"make data: {err}", file=sys.stderr)
        return 1
    print(f"data ready in {args.dest}/ (from {origin})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
