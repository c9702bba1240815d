"""Which of a model's operators a delegate (an NPU's, or LiteRT's XNNPACK) would take, under a profile
of what that delegate accepts, and which ones fall back to the CPU. numpy, PyYAML and the TFLite
interpreter only: this runs on the board too (`inspect`, the sweep's placement metrics, the board's
count of what its interpreter actually delegated)."""
from device_actors.npu.delegated import Delegation, delegation_of
from device_actors.npu.placement import (ModelReadError, OpPlacement, Placement, model_placement, onnx_ops,
                                         placement_of, tflite_ops)
from device_actors.npu.profiles import (DEFAULT_PROFILE, PROFILE_DIR, NpuProfile, ProfileError, load_profile,
                                        profile_names)

__all__ = ["DEFAULT_PROFILE", "Delegation", "ModelReadError", "NpuProfile", "OpPlacement", "PROFILE_DIR", "Placement",
           "ProfileError", "delegation_of", "load_profile", "model_placement", "onnx_ops", "placement_of",
           "profile_names", "tflite_ops"]
