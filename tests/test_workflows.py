"The GitHub workflows cannot run here; check that they are valid and do what the course needs."
import re

import yaml

from conftest import BIN, ROOT, run

WORKFLOWS = ROOT/'.github'/'workflows'


def steps_text(name):
    "All `run:` commands and `uses:` actions of workflow `name`, as one string."
    wf = yaml.safe_load((WORKFLOWS/name).read_text())
    return '\n'.join(s.get('run', '') + s.get('uses', '') for job in wf['jobs'].values() for s in job.get('steps', []))


def test_workflows_match_the_github_schema():
    files = sorted(WORKFLOWS.glob('*.y*ml'))
    assert {f.name for f in files} == {'test.yaml', 'deploy.yaml'}
    run(BIN/'check-jsonschema', '--builtin-schema', 'vendor.github-workflows', *files)


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path/'bad.yaml'
    bad.write_text('on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    step:\n      - run: nbdev_test\n')
    res = run(BIN/'check-jsonschema', '--builtin-schema', 'vendor.github-workflows', bad, check=False)
    assert res.returncode != 0


def test_test_workflow_checks_sync_then_runs_the_readme_test_command_once():
    """The test workflow builds the environment as `make` does (pinned, CPU torch), checks that notebooks and library
    are in sync, then runs `make test`, which executes every lesson once: never nbdev_test, nor pytest a second time."""
    steps = [s for job in yaml.safe_load((WORKFLOWS/'test.yaml').read_text())['jobs'].values() for s in job['steps']]
    runs = [s.get('run', '').strip() for s in steps]
    assert [r for r in runs if re.search(r'\b(make test|pytest|nbdev_test)\b', r)] == ['make test'], runs
    assert runs[-1] == 'make test', 'the tests are not the last step'
    env_step = next(s for s in steps if s.get('run', '').strip() == 'make env')
    assert 'download.pytorch.org/whl/cpu' in str(env_step.get('env', {})), "torch would be PyPI's CUDA build"
    sync = next(i for i, r in enumerate(runs) if 'git status --porcelain' in r)
    assert runs.index('make env') < sync < runs.index('make test')
    for step in ['nbdev_clean', 'nbdev_export', 'tools/readme.py']:
        assert step in runs[sync], step
    recipe = run('make', '--no-print-directory', '-n', '-B', 'env').stdout  # dry run, as if .venv were missing
    assert '-c requirements/constraints.txt' in recipe, recipe


def test_deploy_workflow_builds_docs_with_quarto_and_publishes_pages():
    text = steps_text('deploy.yaml')
    for step in ['quarto-dev/quarto-actions/setup', 'nbdev_docs', 'upload-pages-artifact', 'deploy-pages']:
        assert step in text, step


def test_ci_runs_the_readme_test_command_and_it_runs_each_lesson_once():
    "`.ci/run` is the README's `make test`; that runs pytest, which executes the lessons (not nbdev_test a second time)."
    import re
    ci = [l.strip() for l in (ROOT/'.ci'/'run').read_text().splitlines() if l.strip() and not l.lstrip().startswith('#')]
    assert ci[-1] == 'exec make test', ci
    assert re.search(r'^make test\b', (ROOT/'README.md').read_text(), re.M), 'the README names no `make test`'
    recipe = run('make', '--no-print-directory', '-n', 'test').stdout  # dry run: prints the commands only
    assert re.search(r'-m pytest tests\b', recipe) and '--dist loadgroup' in recipe, recipe
    assert 'nbdev_test' not in recipe, 'make test runs nbdev_test: the lessons would be executed twice'
