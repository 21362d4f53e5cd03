from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("sim_scale", Path(__file__).resolve().parents[2] / "scripts" / "sim_scale.py")
sim = importlib.util.module_from_spec(spec)
sys.modules["sim_scale"] = sim  # dataclasses look their module up
spec.loader.exec_module(sim)


def scenario(**kw):
    base = {
        "workers": 1,
        "threads": 5,
        "servers": 10,
        "per_server": 0,
        "database": "postgres",
        "db_cores": 8,
        "api_instances": 2,
        "rtt": 0.0,
    }
    return sim.Scenario(**{**base, **kw})


def test_one_worker_with_trivial_jobs_is_bound_by_the_worker():
    costs = sim.DEFAULT_COSTS
    result = sim.predict(scenario(), sim.parse_mix("1:0:0B"), costs)
    assert result["bottleneck"] == "workers"
    assert result["throughput"] == round(min(5 / costs["ssh_latency"], 1 / costs["worker_cpu_ssh"]), 3)


def test_everything_on_one_small_host_is_bound_by_its_cores():
    result = sim.predict(scenario(workers=4, executor="local", host_cores=2, api_instances=0), sim.parse_mix("1:0:0B"), sim.DEFAULT_COSTS)
    assert result["bottleneck"] == "host" and result["capacities"]["api"] is None


def test_long_jobs_on_few_servers_with_a_limit_are_bound_by_the_servers():
    result = sim.predict(scenario(workers=100, servers=2, per_server=2), sim.parse_mix("1:60:1KB"), sim.DEFAULT_COSTS)
    assert result["bottleneck"] == "servers"
    assert abs(result["throughput"] - 4 / 60) < 0.01


def test_sqlite_becomes_the_bottleneck_before_postgres_does():
    mix = sim.parse_mix("1:0:1KB")
    costs = {**sim.DEFAULT_COSTS, "api_cpu": 1e-9, "queue_cpu": 1e-9}
    assert sim.predict(scenario(workers=50, database="sqlite"), mix, costs)["bottleneck"] == "database"
    pg = sim.predict(scenario(workers=50, database="postgres"), mix, costs)
    assert pg["throughput"] > sim.predict(scenario(workers=50, database="sqlite"), mix, costs)["throughput"]


def test_mix_shares_are_normalised_and_sizes_parsed():
    mix = sim.parse_mix("3:0:2KB,1:10:1MB")
    assert [round(c.share, 2) for c in mix] == [0.75, 0.25]
    assert mix[0].output == 2048 and mix[1].output == 1 << 20
