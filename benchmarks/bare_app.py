"""The anchor of benchmarks/startup.py: a bare Gradio Blocks app with one image component."""

import sys

import gradio as gr

with gr.Blocks() as demo:
    gr.Image()

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
