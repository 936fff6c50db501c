"""Participant program: rank the documents for each query by shared words (a tiny bag-of-words
retriever, standard library only).

Writes output/pred.csv with the header query_id,ranked_ids: the ids best first, space-separated.
"""

import csv
from pathlib import Path


def words(text: str) -> set[str]:
    return {w.rstrip("s") for w in text.lower().split() if len(w) > 2}


def main() -> None:
    with open("input/data/docs.csv", newline="", encoding="utf-8") as handle:
        docs = [(row["doc_id"], words(row["text"])) for row in csv.DictReader(handle)]
    with open("input/data/queries.csv", newline="", encoding="utf-8") as handle:
        queries = [(row["query_id"], words(row["text"])) for row in csv.DictReader(handle)]
    Path("output").mkdir(exist_ok=True)
    with open("output/pred.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["query_id", "ranked_ids"])
        for query_id, terms in queries:
            scored = [(len(terms & doc_words), doc_id) for doc_id, doc_words in docs]
            ranked = [doc_id for score, doc_id in sorted(scored, key=lambda s: -s[0]) if score]
            writer.writerow([query_id, " ".join(ranked)])
    print(f"ranked documents for {len(queries)} queries")


if __name__ == "__main__":
    main()
