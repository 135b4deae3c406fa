"""samjax.utils.huge_pages: the tunable merged into GLIBC_TUNABLES, the conditions, and a real re-execution."""

import os
import subprocess
import sys

import pytest

from samjax.utils import huge_pages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_environment_adds_the_tunable_once_and_keeps_the_others():
    env = huge_pages.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert env["X"] == "1"
    assert huge_pages.environment(env)["GLIBC_TUNABLES"] == env["GLIBC_TUNABLES"]
    # a user's own choice of the tunable is kept
    assert huge_pages.environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.hugetlb=0"
    assert huge_pages.environment({})["GLIBC_TUNABLES"] == huge_pages.TUNABLE


def test_not_needed_when_switched_off_or_already_set(tmp_path):
    assert not huge_pages.needed({huge_pages.SWITCH: "0"})
    assert not huge_pages.needed({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    never, madvise = tmp_path / "never", tmp_path / "madvise"
    never.write_text("always madvise [never]\n")
    madvise.write_text("always [madvise] never\n")
    assert not huge_pages._thp_available(str(never))
    assert huge_pages._thp_available(str(madvise))
    assert not huge_pages._thp_available(str(tmp_path / "absent"))


CHILD = ("import os, sys; from samjax.utils import huge_pages; print('start', flush=True); huge_pages.reexec(); "
         "print(os.environ.get('GLIBC_TUNABLES', ''), os.environ.get('SAMJAX_HUGE_PAGES', ''), sys.argv[1:])")


@pytest.mark.skipif(not (sys.platform.startswith("linux") and huge_pages._glibc_supports()
                         and huge_pages._thp_available()), reason="needs Linux, glibc >= 2.35 and THP not [never]")
def test_reexec_restarts_the_same_command_once_with_the_tunable():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", huge_pages.SWITCH)}
    env["PYTHONPATH"] = ROOT
    out = subprocess.run([sys.executable, "-c", CHILD, "a", "--b=1"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    # "start" twice (the process before and after the exec), then the re-executed process's environment
    assert out == ["start", "start", "glibc.malloc.hugetlb=1 0 ['a', '--b=1']"]
    env[huge_pages.SWITCH] = "0"
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["start", " 0 []"]  # switched off: no re-execution
