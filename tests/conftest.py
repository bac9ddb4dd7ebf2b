"""Test-session setup shared by every test directory."""

import os

# scikit-learn's check_array_api_input (with NumPy inputs: enabling array-API dispatch must
# not change an estimator's results) only runs when SciPy's array-API mode is on, and
# that must be decided before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
