"""Job requests: strict validation with specific, value-free messages; sealing."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from service.core.keys import SiteKeys
from service.jobs.schemas import InvalidJobRequest, parse_job_request, seal, study_key, unseal

SECRET = "12057847391"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pacs": "p"}, "exactly one of accession_numbers, patient_ids, study_instance_uids or "
                        "query is required (0 given)"),
        ({"pacs": "p", "patient_ids": [SECRET], "accession_numbers": ["A1"]}, "(2 given)"),
        ({"pacs": "p", "patient_ids": []}, "patient_ids: the list is empty"),
        ({"pacs": "p", "patient_ids": ["ok", "  "]}, "patient_ids[1]: empty value"),
        ({"pacs": "p", "patient_ids": [SECRET + "*"]}, "patient_ids[0]: contains a wildcard"),
        ({"pacs": "p", "accession_numbers": ["X" * 17]},
         "accession_numbers[0]: longer than 16 characters"),
        ({"pacs": "p", "study_instance_uids": ["1.2.3", "1.02.3"]},
         "study_instance_uids[1]: not a DICOM UID"),
        ({"pacs": "p", "query": {"date_from": "2024-02-01", "date_to": "2024-01-01"}},
         "date_from is after date_to"),
        ({"pacs": "p", "query": {"date_from": "2024-01-01", "date_to": "2024-02-01",
                                 "modality": "mg;"}}, "modality: a DICOM modality code"),
        ({"pacs": "bad name", "patient_ids": [SECRET]}, "pacs: a PACS node name"),
        ({"pacs": "p", "patient_ids": [SECRET], "destination": "../x"}, "destination:"),
        ({"pacs": "p", "patient_ids": [SECRET], "policy": "/etc/passwd"}, "policy:"),
        ({"pacs": "p", "patient_ids": [SECRET], "surprise": SECRET}, "surprise: Extra inputs"),
    ],
)
def test_invalid_requests_name_the_field_never_the_value(data: dict, message: str) -> None:
    with pytest.raises(InvalidJobRequest) as err:
        parse_job_request(data)
    assert message in err.value.reason
    assert SECRET not in err.value.reason and SECRET not in repr(err.value)


def test_valid_request_deduplicates_and_hides_values_in_repr() -> None:
    req = parse_job_request({"pacs": "orthanc", "accession_numbers": ["A1", " A2 ", "A1"]})
    assert req.accession_numbers == ["A1", "A2"]
    assert req.selector == "accession_numbers" and req.requested == 2
    assert "A1" not in repr(req) and "A1" not in str(req)
    q = parse_job_request({"pacs": "o", "query": {"date_from": "2024-01-01",
                                                  "date_to": "2024-01-31"}})
    assert q.selector == "query" and q.requested == 1 and q.query and q.query.modality == "MG"


def test_sealed_request_is_bound_to_its_job(site_keys: SiteKeys) -> None:
    blob = seal(site_keys, {"patient_ids": [SECRET]}, aad="job:a")
    assert SECRET.encode() not in blob
    assert unseal(site_keys, blob, aad="job:a") == {"patient_ids": [SECRET]}
    with pytest.raises(InvalidTag):
        unseal(site_keys, blob, aad="job:b")  # copied onto another job: refused


def test_study_key_is_the_listeners_keyed_hash(site_keys: SiteKeys) -> None:
    from service.dicom.uid_keys import uid_key

    assert study_key(site_keys, "1.2.3.4") == uid_key(site_keys, "1.2.3.4")
    assert "1.2.3.4" not in study_key(site_keys, "1.2.3.4")
