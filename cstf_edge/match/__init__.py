"""Cross-modal image matching: pair folders with ground truth, OpenCV baseline matchers and the robust
transform estimator. The CSTF matcher plugs in through :class:`cstf_edge.match.baselines.Matcher`.

Coordinate convention of the whole package: x = column, y = row, OpenCV's integer pixel centres (the
centre of the top-left pixel is (0, 0)); transforms are 3x3 and map reference points to query points.
"""
from cstf_edge.match.baselines import MATCHERS, Matcher, Matches, OpenCVMatcher, make_matcher
from cstf_edge.match.estimate import TRANSFORMS, Estimate, estimate_transform
from cstf_edge.match.pairs import MatchPair, read_pairs, read_srif, read_synthrs

__all__ = ["MATCHERS", "TRANSFORMS", "Estimate", "MatchPair", "Matcher", "Matches", "OpenCVMatcher",
           "estimate_transform", "make_matcher", "read_pairs", "read_srif", "read_synthrs"]
