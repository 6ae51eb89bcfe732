"""The function zip is what both targets run: only our handler, byte-for-byte reproducible."""

import zipfile

from stack_common.function_zip import LAMBDA_DIR, build_function_zip, source_code_hash


def test_function_zip_holds_only_the_handler_and_is_reproducible(tmp_path):
    first = build_function_zip(tmp_path / "a" / "function.zip")
    second = build_function_zip(tmp_path / "b" / "function.zip")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == ["lambda_function.py"]
        assert archive.read("lambda_function.py") == (LAMBDA_DIR / "lambda_function.py").read_bytes()


def test_the_hash_changes_when_the_code_does(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    before = source_code_hash(build_function_zip(tmp_path / "one.zip", source_dir=source))
    (source / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 2\n")
    after = source_code_hash(build_function_zip(tmp_path / "two.zip", source_dir=source))
    assert before != after
