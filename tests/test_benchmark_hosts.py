"""``benchmarks/machine.py``: a study resumed on several machines names each invocation's host."""

from conftest import load_benchmark


def test_hosts_line_numbers_the_invocations_and_merges_runs_of_one_host():
    machine = load_benchmark("machine")
    amd, xeon = "AMD EPYC (flags: avx2)", "Intel Xeon (flags: amx_bf16)"
    invocations = [{"host": None}, {}, {"host": amd}, {"host": amd}, {"host": xeon}]
    assert machine.hosts_line(invocations) == (
        "invocations 1–2: not recorded (before the host line); invocations 3–4: AMD EPYC (flags: avx2); "
        "invocation 5: Intel Xeon (flags: amx_bf16)")
    # one host for every invocation: just its line, as a single-machine study always said
    assert machine.hosts_line([{"host": amd}, {"host": amd}]) == amd
    # a host that comes back after another is named again, in order
    assert machine.hosts_line([{"host": amd}, {"host": xeon}, {"host": amd}]) == (
        f"invocation 1: {amd}; invocation 2: {xeon}; invocation 3: {amd}")
    # no invocation names its host: None, so the file says the runs predate the host line
    assert machine.hosts_line([{}, {"host": None}]) is None


def test_saved_invocations_give_an_older_file_s_one_host_to_each_invocation_and_keep_their_own():
    machine = load_benchmark("machine")
    saved = {"host": "AMD EPYC", "invocations": [{"hours": 1.0}, {"hours": 0.5, "host": "Intel Xeon"}]}
    assert [inv["host"] for inv in machine.saved_invocations(saved)] == ["AMD EPYC", "Intel Xeon"]
    assert machine.saved_invocations({}) == []
