#!/usr/bin/env bash
# Download and unpack the data set on an EC2 training host, and create the model folder.
# Idempotent (a complete data set is left alone), resumable (curl continues a partial download), no prompts,
# and loud: any failure stops the script with a non-zero status and a one-line reason.
#
#   DATA_URL   zip archive with train/ valid/ test/ (required: ec2-train passes data.url)
#   DATA_ROOT  where the data set goes (default: ./data; it ends up in $DATA_ROOT/dogImages)
#   MODEL_DIR  model folder to create (required: ec2-train passes the host's model folder)
set -euo pipefail

DATA_URL="${DATA_URL:?ec2-data-download: set DATA_URL (data.url, docs/configuration.md)}"
DATA_ROOT="${DATA_ROOT:-data}"
MODEL_DIR="${MODEL_DIR:?ec2-data-download: set MODEL_DIR}"
TARGET="$DATA_ROOT/dogImages"
ARCHIVE="$DATA_ROOT/$(basename "${DATA_URL%%\?*}")"
STAGING="$DATA_ROOT/.dogImages.extract"

fail() { echo "ec2-data-download: $*" >&2; exit 1; }

mkdir -p "$DATA_ROOT" "$MODEL_DIR"
if [[ -f "$TARGET/.complete" && -d "$TARGET/train" ]]; then
    echo "$TARGET already complete; nothing to do"
    exit 0
fi
command -v curl >/dev/null || fail "curl is required"
command -v python3 >/dev/null || fail "python3 is required (to check and unpack the zip)"

if [[ ! -f "$ARCHIVE" ]]; then
    expected=$(curl --fail --silent --show-error --location --head "$DATA_URL" \
        | tr -d '\r' | awk 'tolower($1) == "content-length:" { size = $2 } END { print size }')
    partial=0
    [[ -f "$ARCHIVE.part" ]] && partial=$(stat -c %s "$ARCHIVE.part")
    if [[ -z "$expected" || "$partial" -lt "$expected" ]]; then
        curl --fail --silent --show-error --location --retry 5 --retry-delay 3 --continue-at - \
            --output "$ARCHIVE.part" "$DATA_URL" || fail "download of $DATA_URL failed; run again to resume"
    fi
    received=$(stat -c %s "$ARCHIVE.part")
    if [[ -n "$expected" && "$received" != "$expected" ]]; then
        fail "downloaded $received of $expected bytes; run again to resume"
    fi
    mv "$ARCHIVE.part" "$ARCHIVE"
fi

if ! reason=$(python3 - "$ARCHIVE" 2>&1 <<'PY'
import sys, zipfile
try:
    bad = zipfile.ZipFile(sys.argv[1]).testzip()    # reads every member and checks its CRC
except (zipfile.BadZipFile, EOFError) as error:
    sys.exit(str(error))
sys.exit(f"CRC mismatch in {bad}" if bad else 0)
PY
); then
    rm -f "$ARCHIVE"
    fail "$ARCHIVE is corrupt ($reason); deleted it: run again to download it anew"
fi
rm -rf "$STAGING"
python3 -m zipfile -e "$ARCHIVE" "$STAGING"
if [[ -d "$STAGING/train" ]]; then
    root="$STAGING"
else
    root=$(find "$STAGING" -mindepth 2 -maxdepth 2 -type d -name train -not -path '*/__MACOSX/*' | head -n 1)
    [[ -n "$root" ]] || fail "the archive has no train/ folder"
    root=$(dirname "$root")
fi
touch "$root/.complete"
rm -rf "$TARGET"
mv "$root" "$TARGET"
rm -rf "$STAGING" "$ARCHIVE"
echo "$TARGET ready: $(find "$TARGET/train" -type f | wc -l) training images"
