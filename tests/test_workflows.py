"The GitHub workflows cannot run here; check that they are valid and do what the course needs."
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


def test_test_workflow_runs_the_nbdev_ci_steps():
    text = steps_text('test.yaml')
    for step in ['requirements/constraints.txt', 'nbdev_clean', 'nbdev_export', 'git status --porcelain',
                 'nbdev_test', 'pytest tests']:
        assert step in text, step


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
