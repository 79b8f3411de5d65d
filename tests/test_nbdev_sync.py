"The notebooks are the source: exporting and cleaning a committed tree must change nothing."
import shutil

from conftest import BIN, ROOT, repo_files, run


def snapshot_repo(dest):
    "Copy the repository's files into `dest` and commit them there."
    for rel in repo_files():
        (dest/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/rel, dest/rel)
    run('git', 'init', '-q', cwd=dest)
    run('git', 'add', '-A', cwd=dest)
    run('git', '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'snapshot', cwd=dest)


def test_export_and_clean_change_nothing(tmp_path):
    snapshot_repo(tmp_path)
    run(BIN/'nbdev_export', cwd=tmp_path)
    run(BIN/'nbdev_clean', cwd=tmp_path)
    changed = run('git', 'status', '--porcelain', '-uall', cwd=tmp_path).stdout
    assert changed == '', f"nbdev_export/nbdev_clean changed files; run `make export` and commit:\n{changed}"


def test_a_changed_notebook_is_detected(tmp_path):
    "The check above can fail: editing an exported cell makes nbdev_export rewrite the module."
    snapshot_repo(tmp_path)
    nb = tmp_path/'nbs'/'01_matmul.ipynb'
    nb.write_text(nb.read_text().replace('def matmul_einsum(', 'def matmul_einsum_renamed('))
    run(BIN/'nbdev_export', cwd=tmp_path)
    assert 'mini_nn/matmul.py' in run('git', 'status', '--porcelain', cwd=tmp_path).stdout


def test_readme_is_generated_from_index():
    res = run(BIN/'python', 'tools/readme.py', '--check', check=False)
    assert res.returncode == 0, res.stderr
