"""JupyterLab's "a newer version is available" check and news pop-ups are off for the course's users.

Upgrading JupyterLab would leave the lock. `make` copies binder/jupyterlab-overrides.json into the
course environment's own settings (.venv/share/jupyter/lab/settings/overrides.json), so it applies to
that JupyterLab only; binder/postBuild writes the same values as user settings (tests/test_binder.py).
"""

import json
import os
import sys
from pathlib import Path

import jsonschema

from tests import labserver
from tests.conftest import ROOT

SOURCE = ROOT / 'binder' / 'jupyterlab-overrides.json'
NOTIFICATION = '@jupyterlab/apputils-extension:notification'
SCHEMAS = Path(sys.prefix) / 'share' / 'jupyter' / 'lab' / 'schemas'
INSTALLED = Path(sys.prefix) / 'share' / 'jupyter' / 'lab' / 'settings' / 'overrides.json'


def test_settings_switch_off_update_check_and_news_and_match_the_schema():
    overrides = json.loads(SOURCE.read_text())
    assert overrides[NOTIFICATION] == {'checkForUpdates': False, 'fetchNews': 'false'}
    for plugin, values in overrides.items():
        package, name = plugin.split(':')
        schema = json.loads((SCHEMAS / package / f'{name}.json').read_text())
        jsonschema.validate(values, schema)  # additionalProperties is false: no misspelt id passes.


def test_make_installed_them_into_the_course_environment():
    assert INSTALLED.read_text() == SOURCE.read_text(), 'run `make env` to install them'


def test_the_course_jupyterlab_serves_them(tmp_path):
    # The environment's JupyterLab, with empty user settings (a learner's own choices would win).
    env = {**os.environ, 'JUPYTERLAB_SETTINGS_DIR': str(tmp_path / 'user-settings'),
           'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path / 'workspaces')}
    path = f'/lab/api/settings/{NOTIFICATION}'
    reply = labserver.query([Path(sys.executable).parent / 'jupyter', 'lab'], [path], cwd=tmp_path,
                            env=env)[path]
    assert labserver.effective_settings(reply) == {'checkForUpdates': False, 'doNotDisturbMode': False,
                                                   'fetchNews': 'false'}
