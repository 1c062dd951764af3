"""Mutation check of models/inception.py against the reference parity cases: each mutant must
make its parity case (tests/test_method_parity.py, fixture method_parity_inception.npz) fail.

    PYTHONPATH=$PWD python tools/mutation_check_inception.py [index ...]

(the runner: tools/mutation_check.py).
"""
import sys

from mutation_check import Mutant, main

SOURCE = "infocam_jax/models/inception.py"
MUTANTS = [Mutant(name, SOURCE, old, new, (
    f"tests/test_method_parity.py::test_reference_parity[{case}]",))
    for name, old, new, case in [
    ("SPG tap b2 reads Mixed_6e instead of Mixed_6d",
     '        elif name == "Mixed_6d":\n            taps["spg_b2"] = x',
     '        elif name == "Mixed_6e":\n            taps["spg_b2"] = x', "inception_v3-spg"),
    ("Mixed_6a stride 2 (torchvision's) instead of 1",
     "block = InceptionB(strides=1, padding=1, name=name, **common)",
     "block = InceptionB(strides=2, padding=1, name=name, **common)", "inception_v3-cam"),
    ("second stem max-pool in floor mode",
     '    x = unit("Conv2d_4a_3x3", 192, 3)(x, train)\n'
     "    x = max_pool(x, 3, 2, 1, impl=opts.conv_impl, ceil_mode=True)",
     '    x = unit("Conv2d_4a_3x3", 192, 3)(x, train)\n'
     "    x = max_pool(x, 3, 2, 1, impl=opts.conv_impl, ceil_mode=False)", "inception_v3-cam"),
    ("InceptionA branch_pool: max-pool instead of the average pool",
     'bp = self.unit("branch_pool", self.pool_features, 1)(avg_pool(x, 3, 1, 1), train)',
     'bp = self.unit("branch_pool", self.pool_features, 1)(max_pool(x, 3, 1, 1), train)',
     "inception_v3-cam"),
    ("BatchNorm eps 1e-5 (torch's default) instead of 1e-3",
     "BN_EPSILON = 1e-3", "BN_EPSILON = 1e-5", "inception_v3-cam"),
    ("ADL default positions 5d 6d A3_2b instead of 5d 6e A3_2b",
     'ADL_POSITIONS = "5d 6e A3_2b"', 'ADL_POSITIONS = "5d 6d A3_2b"', "inception_v3-adl-r1"),
    ("SPG without the third dropout (SPG_C / SPG_A4 read the undropped A3_2b)",
     '    return drop(x, "A4")', '    return x if opts.layout == "guidance" else drop(x, "A4")',
     "inception_v3-spg"),
]]


if __name__ == "__main__":
    sys.exit(main(MUTANTS))
