"""llama-cpp-python's server, run as a user of an Intel AMX CPU must run it: llama.cpp's AMX weight
buffers crash batched evaluation (ggml-org/llama.cpp#20824), so the model loads in plain CPU
buffers there, as the runtime's own loads do. Elsewhere it is the plain server.

    python tests/llama_server.py --model M.gguf --port 8080 ...   (llama_cpp.server's arguments)
"""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp  # noqa: E402

from runtime.generate.llama import cpu_has_amx, weights_in_plain_cpu_buffers  # noqa: E402

if __name__ == "__main__":
    with weights_in_plain_cpu_buffers(llama_cpp, cpu_has_amx()):
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
