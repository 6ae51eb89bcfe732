"""What the local and the AWS target share: the function's package (function_zip), calling the function as a user
does (function_client), the smoke test a deploy ends with (smoke_test) and the check that a model directory is ready
to be packed and served (model_check). Nothing here knows where the stack runs."""
