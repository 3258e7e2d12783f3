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


PREFAULT = """
import json, os, torch, brushwork
from brushwork import process
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
with process.own_mapping():
    fresh = torch.empty(64 * 2**20, dtype=torch.uint8)
before = resident()
process.prefault(fresh)
after = resident()
fresh.fill_(7)
print(json.dumps([after - before, int(fresh.sum() // 7)]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise")
def test_prefault_makes_a_fresh_maps_pages_resident():
    done = subprocess.run([sys.executable, "-c", PREFAULT], capture_output=True, text=True, check=True)
    grown, filled = json.loads(done.stdout)
    kernel = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    if kernel < (5, 14):
        pytest.skip("MADV_POPULATE_WRITE needs Linux 5.14")
    assert grown >= 60 * 2**20 and filled == 64 * 2**20
