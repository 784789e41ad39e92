from tests.conftest import DeviceClient


def test_a_device_creates_a_record_and_pulls_it_back(device_for) -> None:
    alice: DeviceClient = device_for("alice")
    record = "0b0e7c8e-5f0e-4a57-9a51-3f7c1d2b9c01"
    response = alice.push(
        [
            {
                "id": "6f1f7a52-2f6b-4c64-9a53-5b1c8b0d9e11",
                "op": "create",
                "type": "stock_count",
                "record": record,
                "data": {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"},
                "captured_at": "2026-11-25T08:00:00Z",
            }
        ]
    )
    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["status"] == "applied"
    pulled = alice.pull().json()
    assert [c["record"] for c in pulled["changes"]] == [record]
