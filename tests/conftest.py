"""Shared test fixtures. Database selection and the gRPC server fixtures live here."""
