"""docs/clusters.md's compile evidence for sm_90 thread-block clusters (bench/clusters.py), offline: each case
compiles in a subprocess without the interpreter (these tests run under TRITON_INTERPRET=1)."""

import os

import pytest
import triton

from bench import clusters

VERSION = tuple(int(part) for part in triton.__version__.split(".")[:2])
OLDEST_TRITON = os.environ.get("RNNFAST_OLDEST_TRITON")


def test_inline_ptx_cluster_barrier_compiles_in_a_cluster_launch():
    """num_ctas=16 declares a 16-CTA cluster in the PTX, and ptxas accepts the inline cluster barrier."""
    row = clusters.run_case("barrier", 16)
    assert row["ok"], row
    assert row["cluster_directives"] == [".explicitcluster", ".reqnctapercluster 16"]
    barrier = {"barrier.cluster.arrive.release.aligned;", "barrier.cluster.wait.acquire.aligned;"}
    assert barrier <= set(row["barrier_asm"])
    assert row["sass"]["UCGABAR_ARV"] >= 1 and row["sass"]["UCGABAR_WAIT"] >= 1 and row["cubin_bytes"] > 0


@pytest.mark.skipif(VERSION < (3, 9), reason="cross-CTA layouts (one program over a cluster) need Triton 3.9")
def test_lstm_program_spreads_w_hh_over_a_16_cta_cluster():
    """H512 fp16: W_hh (2 MiB) does not fit 8 CTAs of 227 KB but fits 16, the compiler splitting it; each
    step exchanges h through distributed shared memory behind cluster barriers."""
    row = clusters.run_case("lstm", 16, hidden=512, warps=8)
    assert row["ok"], row
    assert row["fits_shared"] and row["dynamic_shared"] >= 4 * 512 * 512 * 2 // 16
    loop = row["loop_ptx"]
    assert loop["barrier_cluster"] >= 1 and loop["ld_shared_cluster"] > 0 and loop["mma_sync"] > 0


@pytest.mark.skipif(VERSION < (3, 9), reason="Gluon's hopper.cluster and async_store are new in Triton 3.9")
def test_gluon_all_gather_stores_into_every_cta():
    """The Gluon all-gather st.async's into all 16 CTAs (16 mapa targets per word) under an mbarrier."""
    row = clusters.run_case("allgather", 16, hidden=512)
    assert row["ok"], row
    assert row["ptx"]["st_async"] >= 16 and row["ptx"]["mbarrier_expect_tx"] >= 1


@pytest.mark.skipif(not OLDEST_TRITON, reason="RNNFAST_OLDEST_TRITON names no folder with the oldest Triton")
def test_oldest_triton_has_the_barrier_but_not_the_cross_cta_program():
    """Triton 3.6: the inline cluster barrier compiles; a program spread over a cluster does not."""
    assert clusters.run_case("barrier", 16, pythonpath=OLDEST_TRITON)["ok"]
    assert not clusters.run_case("lstm", 4, hidden=64, pythonpath=OLDEST_TRITON)["ok"]
