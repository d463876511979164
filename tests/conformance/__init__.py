"""SDK conformance suite: reference section 7, scenario by scenario, with strict validation.

Where each scenario lives:
- 1-13: test_transport_and_assistants.py; 14-20: test_threads_and_messages.py;
- 21-32, 38: test_runs.py; 40, 41: test_run_steps.py;
- invalid input in general: test_validation.py; what the model is sent (response formats,
  auto truncation): test_run_context.py;
- 33-37, 39 (function tools): tests/e2e/test_function_tools.py, test_function_tools_more.py;
- 43-47, 50, 51 (streaming): tests/e2e/test_streaming.py;
- 52-55 (files): test_files.py; 56-60 (vector stores, their files, batches, search):
  test_vector_stores.py; 42 and 49 (file_search in runs, steps with `include[]`, streamed
  citations): tests/e2e/test_file_search.py; 48 (a streamed code_interpreter run):
  tests/e2e/test_code_interpreter.py.
"""
