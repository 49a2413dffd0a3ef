"Builds the package from settings.ini (nbdev's classic setup.py): edit settings.ini, not this file."
import re, setuptools
from configparser import ConfigParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
config = ConfigParser(delimiters=['='])
config.read(HERE/'settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = 'lib_name lib_path description keywords author author_email license min_python status audience language requirements'.split()
for o in expected: assert o in cfg, f"missing expected setting in settings.ini: {o}"

def _version(lib_path):
    "`__version__` of the package: nbdev 3 keeps it in `<lib_path>/__init__.py` (`nbdev-bump-version` writes it there)."
    m = re.search(r'^__version__\s*=\s*[\'"]([^\'"]+)[\'"]', (HERE/lib_path/'__init__.py').read_text(encoding='utf-8'), re.M)
    assert m, f"no __version__ in {lib_path}/__init__.py"
    return m.group(1)

statuses = ['0 - Pre-Planning', '1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13 3.14'.split()
min_python = cfg['min_python']
requirements = cfg.get('requirements', '').split() + cfg.get('pip_requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
lib_path = cfg['lib_path']

# Only the fields pyproject.toml declares `dynamic` are passed here; name, description, keywords, authors, urls and
# requires-python are static there, because nbdev 3 reads them from pyproject.toml.
setuptools.setup(
    version = _version(lib_path),
    license_expression = cfg['license'],
    classifiers = [
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
    ] + ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    packages = setuptools.find_packages(include=[lib_path, lib_path + '.*']),
    include_package_data = True,
    install_requires = requirements,
    extras_require = {'dev': dev_requirements},
    long_description = (HERE/'README.md').read_text(encoding='utf-8'),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg["lib_name"]}={lib_path}._modidx:d'],
    },
)
