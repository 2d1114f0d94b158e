from tests.conftest import EXAMPLE_CSV


def test_upload_example(client, auth):
    r = client.post("/datasets", headers=auth, files={"file": ("a.csv", EXAMPLE_CSV.read_bytes(), "text/csv")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["record_count"] == 120
    r = client.get(f"/datasets/{body['id']}/records", headers=auth, params={"limit": 7})
    assert len(r.json()["data"]) == 7 and r.json()["next_cursor"]
