"""A messenger's sign-up, tested against a local idmesh mesh with the plugin's fixtures only."""

from idmesh.gateway.v1 import gateway_pb2

State = gateway_pb2.IdentificationState


async def test_a_user_is_identified_and_revoked_when_the_contract_ends(idmesh_client):
    phone = await idmesh_client.create_subscriber("beeline")
    ident = await idmesh_client.identify("alpha", "user-1", phone)
    assert ident.state == State.IDENTIFICATION_STATE_IDENTIFIED

    await idmesh_client.terminate_contract("beeline", phone)

    revoked = await idmesh_client.wait_revoked("alpha", "user-1")
    assert revoked.phone_number == phone
