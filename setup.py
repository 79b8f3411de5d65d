"Package metadata comes from settings.ini (nbdev 2's layout); edit that file, not this one."
import shlex
from configparser import ConfigParser

import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = 'version description keywords author author_email lib_name license min_python git_url status audience'
missing = [k for k in expected.split() if k not in cfg]
if missing: raise SystemExit(f"settings.ini is missing {', '.join(missing)}")

def reqs(key): return shlex.split(cfg.get(key, ''))

licenses = {'apache2': 'Apache-2.0'}  # settings.ini name -> SPDX expression
statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
py_versions = ['3.10', '3.11', '3.12', '3.13']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    keywords=cfg['keywords'],
    author=cfg['author'],
    author_email=cfg['author_email'],
    license=licenses.get(cfg['license'].lower(), cfg['license']),
    license_files=['LICENSE'],
    url=cfg['git_url'],
    classifiers=[
        f"Development Status :: {cfg['status']} - {statuses[int(cfg['status'])]}",
        f"Intended Audience :: {cfg['audience'].title()}",
        'Natural Language :: English',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ] + [f'Programming Language :: Python :: {v}' for v in py_versions],
    packages=setuptools.find_packages(include=[cfg['lib_name'], f"{cfg['lib_name']}.*"]),
    include_package_data=True,
    install_requires=reqs('requirements'),
    extras_require={'widgets': reqs('widgets_requirements'),
                    'fast': reqs('fast_requirements'),
                    'train': reqs('train_requirements'),
                    'dev': reqs('widgets_requirements') + reqs('fast_requirements') + reqs('train_requirements') + reqs('dev_requirements')},
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
