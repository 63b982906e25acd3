"""Media: the files jobs take in and give out, read and checked without ComfyUI.

What an input image would make a decoder draw, read from the file's structure (frames, images
and the readers of each format: readers, jpeg, tiff), the caps an input file is held to (caps),
inputs read from the operator's stores (stores: S3, and Azure Blob with azure's signing), and
re-encoding an output image as a client asks (convert).

Imports: app.core and Pillow, nothing else of app.
"""
