"""The scaling curve's training-GM subsamples (data_pipeline.folds.subsample_gms)."""

import pandas as pd
import pytest

from gmparse.data_pipeline.folds import FoldError, subsample_gms


def _gms() -> pd.DataFrame:
    rows = [(f"gan-{i:03d}", "gan", "dcgan" if i % 3 else "resnet") for i in range(30)]
    rows += [(f"vae-{i:03d}", "vae", "backbone") for i in range(10)]
    return pd.DataFrame(rows, columns=["gm_id", "family", "implementation"])


def test_subsample_keeps_strata_shares_and_nests():
    gms = _gms()
    ids = tuple(gms["gm_id"])
    small, large = subsample_gms(gms, ids, 8, seed=3), subsample_gms(gms, ids, 20, seed=3)
    assert len(small) == 8 and len(large) == 20 and len(set(small)) == 8
    assert set(small) <= set(large)  # nested within a seed
    fam = gms.set_index("gm_id")
    strata = (fam["family"] + "/" + fam["implementation"]).loc[list(large)].value_counts()
    assert strata.to_dict() == {"gan/dcgan": 10, "gan/resnet": 5, "vae/backbone": 5}  # 20 x 20/40, 10/40, 10/40
    assert subsample_gms(gms, ids, 8, seed=4) != small  # another seed draws other GMs
    assert subsample_gms(gms, ids, 99) == tuple(sorted(ids))
    with pytest.raises(FoldError):
        subsample_gms(gms, ids, 0)
