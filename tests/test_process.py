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


KEPT_OR_RETURNED = """
import json, os, torch, brushwork
from brushwork import process
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 64 * 2**20
kept = []
for nbytes in (None, size, process.OWN_MAPPING_BYTES):  # own mapping, heap (small block), own mapping (large)
    before = resident()
    with process.own_mapping(nbytes):
        block = torch.ones(size, dtype=torch.uint8)
    del block
    kept.append(resident() - before > size // 2)
print(json.dumps(kept))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_only_large_blocks_get_their_own_mapping_and_go_back_when_freed():
    done = subprocess.run([sys.executable, "-c", KEPT_OR_RETURNED], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [False, True, False]
