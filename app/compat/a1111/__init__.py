"""AUTOMATIC1111's API under /sdapi/v1, on the shipped workflow modules.

routes (the handlers), generations (one job per image, progress, interrupts) and terms
(A1111's words in ComfyUI's: samplers, schedulers, `<lora:…>` tags, sizes, seeds).
"""
