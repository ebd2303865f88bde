"""`python -m lobolib bench prune` on a CPU: small Mistral shape, exact zeros, same mask as a sort."""

from lobolib.perf.prune import bench_prune

SMALL = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}


def test_bench_prune_reports_both_scopes_with_exact_zeros(capsys):
    result = bench_prune(device="cpu", shape=SMALL)
    assert result["device"].startswith("cpu") and result["dtype"] == "bfloat16"
    assert result["shape"] == SMALL and result["sparsity"] == 0.5
    per_layer = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 160)  # q,o + k,v + gate,up,down
    assert result["weights"] == per_layer
    assert set(result["scopes"]) == {"layer", "global"}
    for row in result["scopes"].values():
        assert row["zeros_exact"] is True
        assert row["reference_zeros_exact"] is True and row["masks_match"] is True
        assert row["reference_error"] is None
        assert row["lobolib_s"] > 0 and row["reference_s"] > 0
        for key in ("lobolib_extra_gib", "reference_extra_gib"):
            assert row[key] is None or row[key] >= 0
    table = capsys.readouterr().out
    assert "layer" in table and "global" in table and "reference" in table

