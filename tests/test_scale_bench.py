"""`vqsearch bench scale` at a tiny size, the compressed store forced by a low threshold: "last seen"
is exact search's for every kind of query, no answer is earlier than the planted object's last
sighting, and the store it leaves is an ordinary index."""

import json

from conftest import vqsearch


def test_bench_scale_builds_a_compressed_store_that_answers_like_exact_search(indexed_db, tmp_path):
    db = tmp_path / "scale"
    done = vqsearch("bench", "scale", "--tracks", "2000", "--db", str(db), "--real", str(indexed_db),
                    "--compress-from", "1000", "--planted", "150", "--warm-queries", "10", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["tracks"] == 2000 and figures["cold_crop"]["last_seen_correct"]
    seen = figures["last_seen"]
    assert all(kind["matching"] >= 150 for kind in seen.values())
    assert all(kind["correct"] for kind in seen.values())  # exact search's answer by the engine's rule
    assert seen["crop"]["expected_track"] == seen["crop"]["planted_last_track"]
    # text and both: the planted object's last sighting or a later chance pass of the margin rule
    assert all(kind["answered_track"] >= kind["planted_last_track"] for kind in seen.values())
    assert min(figures["recall_at_10"].values()) >= 0.8
    assert json.loads(vqsearch("check", "--db", str(db), "--json").stdout)["files"] == [
        "visual-1.faiss", "text-1.faiss", "colour-1.faiss"]
    answer = json.loads(vqsearch("query", "--crop", figures["crop"], "--db", str(db), "--json", "--no-relocate").stdout)
    assert answer["last_seen"]["video"].endswith(".mp4") and len(answer["results"]) == 5
