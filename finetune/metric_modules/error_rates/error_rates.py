"""Word and character error rates with their edit counts, computed with jiwer.

Shipped inside the package and loaded by path (`evaluate.load(<dir>)`), so evaluation never fetches a metric
script from the Hub.
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = "WER and CER over a corpus: (S + D + I) / N, N = words (characters) of all references."
_KWARGS = """
Args:
    predictions: list of hypothesis strings.
    references: list of reference strings, none empty (drop empty references before calling).
Returns:
    wer, cer: floats, 0.0 = perfect; can exceed 1.0 with many insertions.
    hits, substitutions, deletions, insertions: word-level edit counts behind wer.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ErrorRates(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        words = jiwer.process_words(list(references), list(predictions))
        return {
            "wer": words.wer,
            "cer": jiwer.cer(list(references), list(predictions)),
            "hits": words.hits,
            "substitutions": words.substitutions,
            "deletions": words.deletions,
            "insertions": words.insertions,
        }
