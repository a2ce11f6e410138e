#!/bin/sh
echo "$GREETING" | jq -R .
