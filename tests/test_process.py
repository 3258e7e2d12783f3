"""The process settings ``import brushwork`` makes, and opting out of them."""

import json
import os
import subprocess
import sys

import pytest

REPORT = ("import json, os, brushwork; from brushwork import process; "
          "print(json.dumps([os.environ.get(process.HUGE_PAGES_VARIABLE), process.keeps_freed_memory]))")


def _settings(**environment) -> list:
    env = {key: value for key, value in os.environ.items()
           if key not in ("THP_MEM_ALLOC_ENABLE", "BRUSHWORK_KEEP_FREED_MEMORY")}
    done = subprocess.run([sys.executable, "-c", REPORT], env={**env, **environment}, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_import_turns_on_huge_pages_and_keeps_freed_memory():
    assert _settings() == ["1", True]


def test_each_setting_can_be_turned_off():
    assert _settings(THP_MEM_ALLOC_ENABLE="0", BRUSHWORK_KEEP_FREED_MEMORY="0") == ["0", False]
