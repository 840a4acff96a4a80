"""Generated gRPC and protobuf code for the dfst.v1 API (do not edit; see protos/)."""
