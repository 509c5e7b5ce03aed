# The agegender app (Streamlit, torch-free: the bundled models run in onnxruntime) as a container.
#   docker build -t agegender .
#   docker run -p 8501:8501 agegender          # one replica; compose.yaml runs several behind a proxy
FROM python:3.11-slim

# OpenCV's and MediaPipe's system libraries (packages.txt, as on Streamlit Community Cloud).
COPY packages.txt /tmp/packages.txt
RUN apt-get update \
    && xargs -a /tmp/packages.txt apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/packages.txt

RUN useradd --create-home --uid 10001 agegender
WORKDIR /app
COPY --chown=agegender:agegender . /app
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PATH=/home/agegender/.local/bin:$PATH
USER agegender
# The same script CI runs in a fresh virtual environment: install, verify the weights, read one face.
RUN sh deploy/install_app.sh

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"
CMD ["python", "-m", "streamlit", "run", "streamlit_app.py", "--server.address=0.0.0.0", "--server.port=8501", \
     "--server.headless=true", "--browser.gatherUsageStats=false"]
