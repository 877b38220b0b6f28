# socialpulse worker / generator image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --create-home socialpulse && mkdir -p /data && chown socialpulse /data
USER socialpulse
ENV SOCIALPULSE_DATA_DIR=/data
EXPOSE 6066
ENTRYPOINT ["socialpulse"]
CMD ["worker"]
