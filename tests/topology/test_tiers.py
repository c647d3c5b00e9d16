"""Node-local tiers: coordination-free ids, precedence, placeholders, health, last-good."""

from __future__ import annotations

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.topology import tiers
from tests.topology.fleetgen import leaf, observation

LEAVES = [leaf(1, r) for r in range(8)]
SPINES = ["s0", "s1", "s2", "s3"]


def test_nodes_on_the_same_leaves_agree_without_talking() -> None:
    a = tiers.node_tiers(observation("a", LEAVES, SPINES))
    b = tiers.node_tiers(observation("b", list(reversed(LEAVES)), SPINES))
    c = tiers.node_tiers(observation("c", [leaf(2, r) for r in range(8)], SPINES))
    assert a.tier_0 == b.tier_0 == tiers.set_id("lg-", LEAVES)
    assert a.tier_0.startswith("lg-") and len(a.tier_0) == 15
    assert c.tier_0 != a.tier_0
    assert a.tier_1 == c.tier_1 == tiers.set_id("sg-", SPINES)
    assert (a.tier_2, a.fabric, a.source) == ("unknown", "unknown", "observed")
    assert list(a.leaf_ids) == sorted(LEAVES) and list(a.spine_ids) == SPINES


def test_every_level_is_present_when_nothing_is_known() -> None:
    t = tiers.node_tiers(fpb.FabricObservation(node="lonely"))
    assert (t.fabric, t.tier_2, t.tier_1, t.tier_0, t.source) == (
        "unknown",
        "unknown",
        "unknown",
        "unknown",
        "none",
    )
    assert not t.degraded and t.rails_expected == 0
    obs = observation("x", LEAVES)  # rails up, but no neighbour source answered
    for rail in obs.rails:
        rail.ClearField("leaf")
    t = tiers.node_tiers(obs)
    assert (t.tier_1, t.tier_0, t.source, t.degraded) == ("unknown", "unknown", "none", False)


def test_static_beats_cloud_beats_observation() -> None:
    obs = observation("n", LEAVES, SPINES)
    obs.cloud.CopyFrom(
        fpb.CloudPlacement(
            provider="oci",
            available=True,
            hpc_island="ocid1.hpcisland.oc1.iad.aaaaislandaaa",
            network_block="ocid1.networkblock.oc1.iad.bbbbnetblockbb",
            local_block="ocid1.localblock.oc1.iad.cccclocalblock",
            host="ocid1.host.x",
        )
    )
    t = tiers.node_tiers(obs)
    assert (t.tier_2, t.tier_1, t.tier_0, t.source) == (
        "aaislandaaa",
        "bnetblockbb",
        "clocalblock",
        "cloud",
    )
    obs.static_placement.CopyFrom(fpb.StaticPlacement(fabric="east", block="b7", rack="r12"))
    t = tiers.node_tiers(obs)
    assert (t.fabric, t.tier_2, t.tier_0, t.source) == ("east", "b7", "r12", "static")
    obs.cloud.available = False  # metadata down: observation again
    obs.ClearField("static_placement")
    t = tiers.node_tiers(obs)
    assert (t.tier_0, t.tier_1, t.source) == (
        tiers.set_id("lg-", LEAVES),
        tiers.set_id("sg-", SPINES),
        "observed",
    )


def test_oci_suffixes_are_the_last_11_characters() -> None:
    assert tiers.ocid_suffix("ocid1.localblock.oc1.iad.anuwcljrv5xpuyqcnp7nxaaiz") == "qcnp7nxaaiz"
    assert tiers.ocid_suffix("") == ""
    assert tiers.ocid_suffix("x.abcdefghij") == "abcdefghij"  # a dot at the edge is trimmed


def test_health_counts_rails_and_rates() -> None:
    t = tiers.node_tiers(observation("n", LEAVES, rates={2: 200.0}))
    assert t.degraded and t.rails_active == 8 and t.rate_gbps == 200.0
    assert t.degraded_reasons == ["rail mlx5_2/1 at 200 Gb/s, expected 400"]
    t = tiers.node_tiers(observation("n", [*LEAVES[:7], None]))
    assert t.degraded and t.rails_active == 7
    assert t.degraded_reasons == ["7 of 8 compute rails active (down: mlx5_7/1)"]
    t = tiers.node_tiers(observation("n", LEAVES, expected=9))  # the profile expects 9
    assert t.degraded_reasons == ["8 of 9 compute rails active"]


def test_last_good_only_while_incomplete_and_consistent() -> None:
    healthy = tiers.node_tiers(observation("n", LEAVES, SPINES))
    cut = observation("n", [*LEAVES[:3], None, *LEAVES[4:]], SPINES)
    kept = tiers.node_tiers(cut, healthy)
    assert (kept.tier_0, kept.tier_1, kept.source) == (healthy.tier_0, healthy.tier_1, "last-good")
    assert kept.degraded and list(kept.leaf_ids) == sorted(LEAVES)
    # A complete observation on other leaves is a recabled node: it moves.
    moved = tiers.node_tiers(observation("n", [leaf(3, r) for r in range(8)]), healthy)
    assert moved.tier_0 == tiers.set_id("lg-", [leaf(3, r) for r in range(8)])
    # An incomplete one that sees a leaf the old set did not have is not the old group.
    odd = tiers.node_tiers(observation("n", [leaf(3, 0), *LEAVES[1:7], None]), healthy)
    assert odd.source == "observed" and odd.tier_0 != healthy.tier_0
    # Tiers recovered from labels carry no leaf set: kept while incomplete.
    from_labels = fpb.FabricTiers(tier_0="lg-0123456789ab", tier_1="unknown", source="labels")
    kept = tiers.node_tiers(cut, from_labels)
    assert (kept.tier_0, kept.tier_1) == ("lg-0123456789ab", tiers.set_id("sg-", SPINES))
    # A cloud-derived previous value is not an observation to keep.
    assert tiers.node_tiers(cut, fpb.FabricTiers(tier_0="x", source="cloud")).source == "observed"


def test_cloud_values_survive_an_unreachable_metadata_service() -> None:
    obs = observation("n", LEAVES)
    for rail in obs.rails:
        rail.ClearField("leaf")  # RoCE on OCI: no LLDP neighbours
    obs.cloud.CopyFrom(
        fpb.CloudPlacement(
            provider="oci",
            available=True,
            hpc_island="x.island00001",
            network_block="x.block000001",
            local_block="x.local000001",
        )
    )
    up = tiers.node_tiers(obs)
    assert (up.tier_2, up.tier_1, up.tier_0) == ("island00001", "block000001", "local000001")
    obs.cloud.CopyFrom(fpb.CloudPlacement(provider="oci", available=False, error="HTTP 500"))
    assert tiers.node_tiers(obs).tier_0 == "unknown"
    previous = fpb.FabricTiers()
    previous.CopyFrom(up)
    previous.source = "labels"  # what a previous label map gives
    down = tiers.node_tiers(obs, previous)
    assert (down.tier_2, down.tier_1, down.tier_0, down.source) == (
        "island00001",
        "block000001",
        "local000001",
        "last-good",
    )


def test_last_good_is_carried_through_a_chain_and_reset_by_a_complete_observation() -> None:
    healthy = tiers.node_tiers(observation("n", LEAVES, SPINES))
    one_down = observation("n", [*LEAVES[:3], None, *LEAVES[4:]], SPINES)
    two_down = observation("n", [None, *LEAVES[1:3], None, *LEAVES[4:]], SPINES)
    first = tiers.node_tiers(one_down, healthy)
    second = tiers.node_tiers(two_down, first)  # the previous is itself last-good
    assert (second.tier_0, second.tier_1, second.source) == (
        healthy.tier_0,
        healthy.tier_1,
        "last-good",
    )
    assert list(second.leaf_ids) == sorted(LEAVES), "the full set is carried, not the partial one"
    back = tiers.node_tiers(observation("n", LEAVES, SPINES), second)
    assert (back.tier_0, back.source) == (healthy.tier_0, "observed")


def test_a_previous_value_from_the_fleet_is_kept_while_incomplete() -> None:
    fleet = fpb.FabricTiers(
        tier_0="lg-fleet0000000",
        tier_1="sg-fleet0000000",
        source="fleet",
        leaf_ids=sorted(LEAVES),
        spine_ids=SPINES,
    )
    cut = observation("n", [*LEAVES[:7], None], SPINES)
    kept = tiers.node_tiers(cut, fleet)
    assert (kept.tier_0, kept.tier_1, kept.source) == (fleet.tier_0, fleet.tier_1, "last-good")
    # complete: the node's own observation wins over the fleet's earlier grouping
    own = tiers.node_tiers(observation("n", LEAVES, SPINES), fleet)
    assert (own.tier_0, own.source) == (tiers.set_id("lg-", LEAVES), "observed")
    # a placeholder is never a value to keep
    none = fpb.FabricTiers(tier_0=tiers.PLACEHOLDER, source="fleet")
    assert tiers.node_tiers(cut, none).source == "observed"


def test_health_with_every_rail_down_and_the_down_list() -> None:
    dark = tiers.node_tiers(observation("n", [None, None]))
    assert (dark.rails_active, dark.rails_expected, dark.rate_gbps) == (0, 2, 0.0)
    assert list(dark.degraded_reasons) == ["0 of 2 compute rails active (down: mlx5_0/1, mlx5_1/1)"]
    assert (dark.tier_0, dark.source) == (tiers.PLACEHOLDER, "none")
    slow = tiers.node_tiers(observation("n", LEAVES[:2], rates={1: 200.0}))
    assert slow.rate_gbps == 200.0
    assert list(slow.degraded_reasons) == ["rail mlx5_1/1 at 200 Gb/s, expected 400"]


def test_incomplete_counts_rails_without_an_expectation() -> None:
    obs = observation("n", [LEAVES[0], None])
    obs.rails_expected = 0
    assert tiers.incomplete(obs), "one of two rails down is incomplete with no count given"
    whole = observation("n", LEAVES[:2])
    whole.rails_expected = 0
    assert not tiers.incomplete(whole)
    blind = observation("n", LEAVES[:2])
    blind.rails[1].leaf.id = ""
    assert tiers.incomplete(blind), "an active rail with no neighbour leaves the set partial"


def test_last_good_keeps_an_equal_leaf_set_and_carries_static_blocks() -> None:
    healthy = tiers.node_tiers(observation("n", LEAVES, SPINES))
    healthy.tier_2, healthy.fabric = "block-7", "fab-a"
    same = observation("n", [*LEAVES[:7], None], SPINES)
    kept = tiers.node_tiers(same, healthy)
    assert (kept.tier_0, kept.tier_2, kept.fabric) == (healthy.tier_0, "block-7", "fab-a")
    # a configured block wins over the remembered one
    same.static_placement.block = "block-9"
    assert tiers.node_tiers(same, healthy).tier_2 == "block-9"
    # not kept (complete): nothing is carried over from the previous value
    fresh = tiers.node_tiers(observation("n", LEAVES, SPINES), healthy)
    assert (fresh.tier_2, fresh.fabric) == (tiers.PLACEHOLDER, tiers.PLACEHOLDER)
