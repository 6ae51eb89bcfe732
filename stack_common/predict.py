"""`invoke predict` on either target: the event from the flags, one call of the function, its answer printed.
Only how to reach the function differs between targets (the `connect` each passes)."""

import botocore.exceptions
from invoke.exceptions import Exit

from stack_common.function_client import (PredictRequestError, build_event, describe_failure, format_predictions,
                                          invoke_function)


def predict_through(connect, url=None, image=None, top_k=5):
    """connect() -> (lambda client, function name), called once the flags make an event; returns the answer's body."""
    try:
        event = build_event(url=url, image=image, top_k=top_k)
    except (PredictRequestError, ValueError) as error:
        raise Exit(f"predict: {error}")
    client, function_name = connect()
    try:
        answer = invoke_function(client, function_name, event)
    except botocore.exceptions.EndpointConnectionError:
        raise Exit(f"predict: nothing answers at {client.meta.endpoint_url}: is the stack running? "
                   "(`invoke status`, `invoke deploy`)")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise Exit(f"predict: calling function {function_name} failed: {error}")
    if answer.status != 200:
        raise Exit(f"predict: {describe_failure(answer)}")
    for line in format_predictions(answer.body):
        print(line)
    return answer.body
